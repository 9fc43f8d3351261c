"""Teacher backends behind one protocol, imported lazily so optional engines are needed only when used; the
teacher cache (answers keyed by request fingerprint) and the request builder that every stage shares."""

from __future__ import annotations

import importlib

from distilflow.errors import SpecError
from distilflow.models import GenerationParams, TopLogprobs
from distilflow.jobspec import TeacherSpec
from distilflow.teachers.base import (
    Teacher,
    TeacherAnswer,
    TeacherFailure,
    TeacherRequest,
    TeacherResult,
    request_fingerprint,
)

# backend name -> "module:Class"
BACKENDS: dict[str, str] = {
    "hf": "distilflow.teachers.hf:HFTeacher",
    "openai": "distilflow.teachers.openai_api:OpenAITeacher",
    "recorded": "distilflow.teachers.recorded:RecordedTeacher",
}


def load_teacher(spec: TeacherSpec, section: str = "teacher") -> Teacher:
    """The backend of a teacher section; `section` names its settings in messages (`evaluation.judge` for a judge)."""
    target = BACKENDS.get(spec.backend)
    if spec.backend == "vllm":
        # An in-process vLLM engine is not built yet; vLLM's own OpenAI-compatible server does the same job.
        raise SpecError("teacher.backend 'vllm' runs through vLLM's server for now: start `vllm serve MODEL` and use "
                        "teacher.backend: openai with base_url: http://HOST:8000/v1")
    if target is None:
        raise SpecError(f"teacher.backend {spec.backend!r} is not available yet (available: {', '.join(BACKENDS)})")
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)(spec, section=section)


__all__ = [
    "BACKENDS", "GenerationParams", "Teacher", "TeacherAnswer", "TeacherFailure", "TeacherRequest",
    "TeacherResult", "TopLogprobs", "load_teacher", "request_fingerprint",
]
