"""Stage 2, generate: the teacher answers every training and validation input.

Each answer is committed to the job's teacher cache as it arrives; a re-run asks only for what is
missing. When all are in, the synthetic data set is built from the cache (see synthetic.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from distilflow.data import write_jsonl_atomic
from distilflow.errors import StageError
from distilflow.spec import JobSpec
from distilflow.synthetic import build_synthetic
from distilflow.tasks import Example, Message
from distilflow.teacher_cache import TeacherCache
from distilflow.teachers import GenerationParams, TeacherFailure, TeacherRequest, load_teacher
from distilflow.teachers.base import request_fingerprint

if TYPE_CHECKING:
    from distilflow.runner import StageContext

log = logging.getLogger(__name__)
TEACHER_SPLITS = ("train", "validation")


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


def run_generate(ctx: "StageContext") -> dict[str, Any]:
    spec = ctx.spec
    params = generation_params(spec)
    teacher = load_teacher(spec.teacher)
    cache = TeacherCache(ctx.paths.teacher_cache)
    try:
        identity = teacher.identity()
        requests_by_split = {split: build_requests(ctx.examples(split), spec, identity, params)
                             for split in TEACHER_SPLITS if ctx.examples(split)}
        all_requests = {r.key: r for requests in requests_by_split.values() for r in requests}
        known = cache.known_keys(all_requests)
        pending = [r for key, r in all_requests.items() if key not in known]
        log.info("teacher stage: %d requests, %d already answered, %d to ask", len(all_requests), len(known), len(pending))
        failures, usage = _ask_teacher(ctx, teacher, cache, pending, params, already=len(known), total=len(all_requests))
    finally:
        teacher.close()

    write_jsonl_atomic(ctx.paths.failed, ({"key": f.key, "reason": f.reason,
                                           "messages": all_requests[f.key].messages} for f in failures.values()))
    answered = len(all_requests) - len(failures)
    success_ratio = answered / len(all_requests) if all_requests else 1.0
    if success_ratio < spec.generation.min_success_ratio:
        raise StageError(
            f"the teacher failed on {len(failures)} of {len(all_requests)} inputs ({1 - success_ratio:.0%}), more than "
            f"generation.min_success_ratio allows; the {answered} answers are kept and a re-run asks only for the rest "
            f"(reasons in {ctx.paths.failed})")
    summary = build_synthetic(ctx, cache, requests_by_split)
    cache.close()
    return {"requests": len(all_requests), "cached_before": len(known), "failed": len(failures), **usage, **summary}


def _ask_teacher(ctx: "StageContext", teacher, cache: TeacherCache, pending: list[TeacherRequest],
                 params: GenerationParams, already: int, total: int) -> tuple[dict[str, TeacherFailure], dict[str, int]]:
    failures: dict[str, TeacherFailure] = {}
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    with ctx.progress("generate", total, "teacher answers") as progress:
        progress.update(already)
        for result in teacher.generate(pending, params):
            if isinstance(result, TeacherFailure):
                failures[result.key] = result
            else:
                cache.put_many([result])  # committed (durable) before it counts
                usage["prompt_tokens"] += result.prompt_tokens
                usage["completion_tokens"] += result.completion_tokens
                progress.advance()
            progress.note(f"tokens in/out {usage['prompt_tokens']:,}/{usage['completion_tokens']:,}"
                          + (f"  failed {len(failures)}" if failures else ""))
    return failures, usage
