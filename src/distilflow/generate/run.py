"""Stage 2, generate: the teacher answers every training and validation input.

Each answer is committed to the job's teacher cache as it arrives, before the next one is taken (remote
teachers keep a request's concurrency slot until then, so a crash re-pays at most max_concurrency
requests); a re-run asks only for what is missing. When all are in, the synthetic data set is built from
the cache (see synthetic.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from distilflow.errors import StageError
from distilflow.generate.synthetic import RowAnswer, build_synthetic
from distilflow.io import write_jsonl_atomic
from distilflow.jobs.context import StageContext
from distilflow.jobspec import TeacherSpec
from distilflow.teachers import GenerationParams, Teacher, TeacherFailure, TeacherRequest, load_teacher
from distilflow.teachers.cache import TeacherCache
from distilflow.teachers.requests import build_requests, teacher_plan

log = logging.getLogger(__name__)
TEACHER_SPLITS = ("train", "validation")
_NOTE_EVERY_S = 0.25  # the live progress line is rebuilt at most this often (it must not slow the stage)


def generate_stage(ctx: StageContext) -> dict[str, Any]:
    spec = ctx.spec
    if spec.combine is not None:  # several teachers
        from distilflow.generate.team import team_stage

        return team_stage(ctx)
    params, shots = teacher_plan(spec, ctx.task, ctx.examples("train"))
    teacher = load_teacher(spec.teacher)
    cache = TeacherCache(ctx.paths.teacher_cache)
    try:
        identity = teacher.identity()
        requests_by_split = {split: build_requests(ctx.examples(split), spec, identity, params, shots)
                             for split in TEACHER_SPLITS if ctx.examples(split)}
        all_requests = {r.key: r for requests in requests_by_split.values() for r in requests}
        known = cache.known_keys(all_requests)
        pending = [r for key, r in all_requests.items() if key not in known]
        log.info("teacher stage: %d requests, %d already answered, %d to ask", len(all_requests), len(known), len(pending))
        started = time.monotonic()
        failures, usage = ask_teacher(ctx, teacher, cache, pending, params, already=len(known), total=len(all_requests))
        elapsed = time.monotonic() - started
        teacher_stats = teacher.stats()
        by_endpoint = teacher.answers_by_endpoint()
    finally:
        teacher.close()

    ids_by_key: dict[str, list[str]] = {}
    for split, requests in requests_by_split.items():
        for example, request in zip(ctx.examples(split), requests):
            ids_by_key.setdefault(request.key, []).append(example.id)
    write_jsonl_atomic(ctx.paths.failed, ({"key": f.key, "ids": ids_by_key.get(f.key, []), "reason": f.reason,
                                           "messages": all_requests[f.key].messages} for f in failures.values()))
    answered = len(all_requests) - len(failures)
    success_ratio = answered / len(all_requests) if all_requests else 1.0
    if success_ratio < spec.generation.min_success_ratio:
        cache.close()
        raise StageError(
            f"the teacher failed on {len(failures)} of {len(all_requests)} inputs ({1 - success_ratio:.0%}), more than "
            f"generation.min_success_ratio={spec.generation.min_success_ratio:g} allows; the {answered} answers are kept "
            f"and a re-run asks only for the rest (reasons in {ctx.paths.failed})")
    try:
        totals = cached_usage(cache, all_requests)
        summary = build_synthetic(ctx, {split: [_row_answer(cache, r.key) for r in requests]
                                        for split, requests in requests_by_split.items()})
    finally:
        cache.close()
    this_run = {"answers": len(pending) - len(failures), "seconds": round(elapsed, 3),
                "answers_per_s": round((len(pending) - len(failures)) / elapsed, 2) if elapsed > 0 else None,
                **usage, **teacher_stats, **({"answers_by_endpoint": by_endpoint} if by_endpoint else {})}
    cost = spec.teacher.cost_usd(totals["prompt_tokens"], totals["completion_tokens"])
    return {"requests": len(all_requests), "cached_before": len(known), "failed": len(failures), **totals,
            **({"cost_usd": round(cost, 6)} if cost is not None else {}), "this_run": this_run, **summary}


def _row_answer(cache: TeacherCache, key: str) -> RowAnswer | None:
    answer = cache.get(key)
    return None if answer is None else RowAnswer(key, answer.texts)


def cached_usage(cache: TeacherCache, requests: Iterable[str]) -> dict[str, int]:
    """Tokens of every stored answer of this job (what the whole teacher stage cost, across resumes)."""
    totals = {"prompt_tokens": 0, "completion_tokens": 0}
    for key in requests:
        answer = cache.get(key)
        if answer is not None:
            totals["prompt_tokens"] += answer.prompt_tokens
            totals["completion_tokens"] += answer.completion_tokens
    return totals


def ask_teacher(ctx: StageContext, teacher: Teacher, cache: TeacherCache, pending: list[TeacherRequest],
                params: GenerationParams, already: int, total: int, spec: TeacherSpec | None = None,
                description: str = "teacher answers") -> tuple[dict[str, TeacherFailure], dict[str, Any]]:
    """Ask `teacher` (described by `spec`, default the job's teacher) for `pending`, committing each answer."""
    spec = spec or ctx.spec.teacher
    failures: dict[str, TeacherFailure] = {}
    usage: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0}
    started, last_note = time.monotonic(), 0.0
    with ctx.progress("generate", total, description) as progress:
        progress.update(already)
        for result in teacher.generate(pending, params):
            if isinstance(result, TeacherFailure):
                failures[result.key] = result
            else:
                cache.put_many([result])  # committed (durable) before it counts and before the next is taken
                usage["prompt_tokens"] += result.prompt_tokens
                usage["completion_tokens"] += result.completion_tokens
                progress.advance()
            now = time.monotonic()
            if now - last_note >= _NOTE_EVERY_S:
                last_note = now
                progress.note(_live_note(spec, progress.done - already, now - started, usage,
                                         len(failures), teacher.stats()))
        progress.note(_live_note(spec, progress.done - already, time.monotonic() - started, usage,
                                 len(failures), teacher.stats()))
    cost = spec.cost_usd(usage["prompt_tokens"], usage["completion_tokens"])
    if cost is not None:
        usage["cost_usd"] = round(cost, 6)
    return failures, usage


def _live_note(teacher: TeacherSpec, answered: int, seconds: float, usage: dict[str, Any], failed: int,
               stats: dict[str, int]) -> str:
    """`318.2 rows/s avg · tokens 12,340 in / 45,600 out · $0.0123 · errors 4 (retries 4) · failed 1` (this run)."""
    parts = [f"{answered / seconds:,.1f} rows/s avg" if seconds > 0 else "- rows/s",
             f"tokens {usage['prompt_tokens']:,} in / {usage['completion_tokens']:,} out"]
    cost = teacher.cost_usd(usage["prompt_tokens"], usage["completion_tokens"])
    if cost is not None:
        parts.append(f"${cost:,.4f}")
    errors = sum(v for k, v in stats.items() if k in ("rate_limited", "server_errors", "timeouts", "unreachable",
                                                      "connection_errors", "malformed", "api_errors"))
    if errors:
        parts.append(f"errors {errors} (retries {stats.get('retries', 0)})")
    if failed:
        parts.append(f"failed {failed}")
    return " · ".join(parts)
