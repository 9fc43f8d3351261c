"""From a job spec and task examples to teacher requests: what the teacher sees, with which parameters, under
which cache key. Used by the teacher stage and by evaluation of a recorded teacher (the same prompts)."""

from __future__ import annotations

from typing import Any

from distilflow.models import GenerationParams, Message
from distilflow.spec import JobSpec
from distilflow.tasks import Example
from distilflow.teachers.base import TeacherRequest, request_fingerprint


def generation_params(spec: JobSpec) -> GenerationParams:
    g = spec.generation
    return GenerationParams(
        max_tokens=g.max_tokens, temperature=spec.teacher_temperature, top_p=g.top_p,
        num_samples=g.num_samples, seed=g.seed, stop=tuple(g.stop), top_logprobs=g.top_logprobs,
    )


def teacher_messages(example: Example, spec: JobSpec) -> list[Message]:
    """What the teacher sees: the student's prompt plus teacher-only instructions (system prompt, few-shot)."""
    messages = [dict(m) for m in example.messages]
    teacher_prompt = spec.generation.teacher_prompt
    if teacher_prompt:
        first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
        messages[first_user]["content"] = f"{teacher_prompt.rstrip()}\n\n{messages[first_user]['content']}"
    if spec.generation.system_prompt:
        messages = [m for m in messages if m["role"] != "system"]
        messages.insert(0, {"role": "system", "content": spec.generation.system_prompt})
    return messages


def build_requests(examples: list[Example], spec: JobSpec, identity: dict[str, Any],
                   params: GenerationParams) -> list[TeacherRequest]:
    requests = []
    for example in examples:
        messages = teacher_messages(example, spec)
        requests.append(TeacherRequest(key=request_fingerprint(identity, messages, params), messages=messages))
    return requests
