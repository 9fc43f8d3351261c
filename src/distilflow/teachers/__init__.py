"""Teacher backends behind one protocol, imported lazily so optional engines are needed only when used; the
teacher cache (answers keyed by request fingerprint) and the request builder that every stage shares."""

from __future__ import annotations

import importlib

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

# backend name -> "module:Class"; the spec accepts exactly these (jobspec/sections.py: TeacherSpec.backend; a vLLM
# teacher runs as `vllm serve`, through backend openai).
BACKENDS: dict[str, str] = {
    "hf": "distilflow.teachers.hf:HFTeacher",
    "openai": "distilflow.teachers.openai_api:OpenAITeacher",
    "recorded": "distilflow.teachers.recorded:RecordedTeacher",
}


def load_teacher(spec: TeacherSpec, section: str = "teacher") -> Teacher:
    """The backend of a teacher section; `section` names its settings in messages (`evaluation.judge` for a judge)."""
    module_name, class_name = BACKENDS[spec.backend].split(":")
    return getattr(importlib.import_module(module_name), class_name)(spec, section=section)


__all__ = [
    "BACKENDS", "GenerationParams", "Teacher", "TeacherAnswer", "TeacherFailure", "TeacherRequest",
    "TeacherResult", "TopLogprobs", "load_teacher", "request_fingerprint",
]
