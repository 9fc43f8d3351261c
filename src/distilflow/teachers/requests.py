"""From a job spec and task examples to teacher requests: what the teacher sees, with which parameters, under
which cache key. Used by the teacher stage and by evaluation of a recorded teacher (the same prompts)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from distilflow.models import GenerationParams, Message
from distilflow.jobspec import JobSpec
from distilflow.tasks import Example, Task
from distilflow.tasks.base import user_prompt
from distilflow.teachers.calibration import CONTENT_FREE_INPUTS
from distilflow.teachers.base import TeacherRequest, request_fingerprint


def generation_params(spec: JobSpec, task: Task | None = None) -> GenerationParams:
    """The teacher's sampling settings; in answer_mode rank, the labels it chooses from (part of the cache key)."""
    g = spec.generation
    choices = task.choices(g.answer_mode) if task is not None else ()
    return GenerationParams(
        max_tokens=g.max_tokens, temperature=spec.teacher_temperature, top_p=g.top_p,
        num_samples=g.num_samples, seed=g.seed, stop=tuple(g.stop), top_logprobs=g.top_logprobs, choices=choices,
    )


def few_shot_examples(spec: JobSpec, task: Task, train: Sequence[Example]) -> list[Example]:
    """`generation.few_shot` labelled training rows for the teacher's prompt: spread evenly over the answers they
    teach (round robin over the labels), chosen with `generation.seed`, the same for every request (so the block
    is a prefix every prompt shares, and its cache is reused). `generation.few_shot_order` orders the block:
    `shuffled` (seeded) or `round_robin` (one shot of each answer in turn, answers in sorted order, as chosen)."""
    wanted = spec.generation.few_shot
    labelled = [e for e in train if e.reference is not None]
    if not wanted or not labelled:
        return []
    rng = random.Random(spec.generation.seed or 0)
    groups: dict[str, list[Example]] = {}
    for example in labelled:
        groups.setdefault(task.answer_key(task.reference_answer(example.reference)) or "", []).append(example)
    for members in groups.values():
        rng.shuffle(members)
    chosen: list[Example] = []
    while len(chosen) < wanted and any(groups.values()):
        for key in sorted(groups):
            if groups[key] and len(chosen) < wanted:
                chosen.append(groups[key].pop())
    if spec.generation.few_shot_order == "shuffled":
        rng.shuffle(chosen)
    return chosen


def shot_messages(task: Task, shots: Sequence[Example]) -> list[Message]:
    """Few-shot examples as earlier turns: each one's prompt, then its reference as the answer."""
    messages: list[Message] = []
    for shot in shots:
        messages += [dict(m) for m in shot.messages if m["role"] != "system"]
        messages.append({"role": "assistant", "content": task.reference_answer(shot.reference)})
    return messages


def teacher_messages(example: Example, spec: JobSpec, shots: Sequence[Message] = ()) -> list[Message]:
    """What the teacher sees: teacher-only instructions (system prompt, teacher_prompt), few-shot turns, then the
    student's prompt. The instructions go first so that every prompt shares them as a prefix."""
    own = [dict(m) for m in example.messages]
    messages = [*(m for m in own if m["role"] == "system"), *(dict(m) for m in shots),
                *(m for m in own if m["role"] != "system")]
    teacher_prompt = spec.generation.teacher_prompt
    if teacher_prompt:
        first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
        messages[first_user]["content"] = f"{teacher_prompt.rstrip()}\n\n{messages[first_user]['content']}"
    if spec.generation.system_prompt:
        messages = [m for m in messages if m["role"] != "system"]
        messages.insert(0, {"role": "system", "content": spec.generation.system_prompt})
    return messages


def build_requests(examples: list[Example], spec: JobSpec, identity: dict[str, Any],
                   params: GenerationParams, shots: Sequence[Message] = ()) -> list[TeacherRequest]:
    requests = []
    for example in examples:
        messages = teacher_messages(example, spec, shots)
        requests.append(TeacherRequest(key=request_fingerprint(identity, messages, params), messages=messages))
    return requests


def content_free_requests(spec: JobSpec, task: Task, identity: dict[str, Any], params: GenerationParams,
                          shots: Sequence[Message] = ()) -> list[TeacherRequest]:
    """The teacher's requests for the content-free inputs (teachers/calibration.py) under the job's prompt, when
    `generation.calibration: content_free` calibrates a ranking teacher; none otherwise. Cached like any other."""
    if spec.label_calibration != "content_free" or not params.choices:
        return []
    examples = [Example(id=f"content_free:{text}", messages=user_prompt(task.prompt_for_input(text)))
                for text in CONTENT_FREE_INPUTS]
    return build_requests(examples, spec, identity, params, shots)


def teacher_plan(spec: JobSpec, task: Task, train: Sequence[Example]) -> tuple[GenerationParams, list[Message]]:
    """What every teacher request of a job shares: its parameters and its few-shot turns (the teacher stage, its
    dry run and the teacher's evaluation all ask with these)."""
    return generation_params(spec, task), shot_messages(task, few_shot_examples(spec, task, train))
