"""Stage 2, generate: the teacher answers every training and validation input.

Each answer is committed to the job's teacher cache as it arrives, before the next one is taken (remote
teachers keep a request's concurrency slot until then, so a crash re-pays at most max_concurrency
requests); a re-run asks only for what is missing. When all are in, the synthetic data set is built from
the cache (see synthetic.py). `estimate_generate` is the dry run: requests, tokens and cost, nothing sent.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilflow.data import write_jsonl_atomic
from distilflow.errors import StageError
from distilflow.spec import JobSpec, TeacherSpec
from distilflow.synthetic import build_synthetic
from distilflow.tasks import Example, Message
from distilflow.teacher_cache import TeacherCache
from distilflow.teachers import GenerationParams, Teacher, TeacherFailure, TeacherRequest, load_teacher
from distilflow.teachers.base import request_fingerprint

if TYPE_CHECKING:
    from distilflow.prepare import PreparedInputs
    from distilflow.runner import StageContext
    from distilflow.workspace import Workspace

log = logging.getLogger(__name__)
TEACHER_SPLITS = ("train", "validation")
_NOTE_EVERY_S = 0.25  # the live progress line is rebuilt at most this often (it must not slow the stage)


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


def cost_usd(teacher: TeacherSpec, prompt_tokens: float, completion_tokens: float) -> float | None:
    """Dollars for these tokens at the spec's prices (None when no price is given)."""
    if teacher.price_per_million_input_tokens is None and teacher.price_per_million_output_tokens is None:
        return None
    return (prompt_tokens * (teacher.price_per_million_input_tokens or 0.0)
            + completion_tokens * (teacher.price_per_million_output_tokens or 0.0)) / 1e6


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
        started = time.monotonic()
        failures, usage = _ask_teacher(ctx, teacher, cache, pending, params, already=len(known), total=len(all_requests))
        elapsed = time.monotonic() - started
        teacher_stats = teacher.stats()
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
        totals = _cached_usage(cache, all_requests)
        summary = build_synthetic(ctx, cache, requests_by_split)
    finally:
        cache.close()
    this_run = {"answers": len(pending) - len(failures), "seconds": round(elapsed, 3),
                "answers_per_s": round((len(pending) - len(failures)) / elapsed, 2) if elapsed > 0 else None,
                **usage, **teacher_stats}
    cost = cost_usd(spec.teacher, totals["prompt_tokens"], totals["completion_tokens"])
    return {"requests": len(all_requests), "cached_before": len(known), "failed": len(failures), **totals,
            **({"cost_usd": round(cost, 6)} if cost is not None else {}), "this_run": this_run, **summary}


def _cached_usage(cache: TeacherCache, requests: dict[str, TeacherRequest]) -> dict[str, int]:
    """Tokens of every stored answer of this job (what the whole teacher stage cost, across resumes)."""
    totals = {"prompt_tokens": 0, "completion_tokens": 0}
    for key in requests:
        answer = cache.get(key)
        if answer is not None:
            totals["prompt_tokens"] += answer.prompt_tokens
            totals["completion_tokens"] += answer.completion_tokens
    return totals


def _ask_teacher(ctx: "StageContext", teacher: Teacher, cache: TeacherCache, pending: list[TeacherRequest],
                 params: GenerationParams, already: int, total: int) -> tuple[dict[str, TeacherFailure], dict[str, Any]]:
    failures: dict[str, TeacherFailure] = {}
    usage: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0}
    started, last_note = time.monotonic(), 0.0
    with ctx.progress("generate", total, "teacher answers") as progress:
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
                progress.note(_live_note(ctx.spec.teacher, progress.done - already, now - started, usage,
                                         len(failures), teacher.stats()))
        progress.note(_live_note(ctx.spec.teacher, progress.done - already, time.monotonic() - started, usage,
                                 len(failures), teacher.stats()))
    cost = cost_usd(ctx.spec.teacher, usage["prompt_tokens"], usage["completion_tokens"])
    if cost is not None:
        usage["cost_usd"] = round(cost, 6)
    return failures, usage


def _live_note(teacher: TeacherSpec, answered: int, seconds: float, usage: dict[str, Any], failed: int,
               stats: dict[str, int]) -> str:
    """`318.2 rows/s avg · tokens 12,340 in / 45,600 out · $0.0123 · errors 4 (retries 4) · failed 1` (this run)."""
    parts = [f"{answered / seconds:,.1f} rows/s avg" if seconds > 0 else "- rows/s",
             f"tokens {usage['prompt_tokens']:,} in / {usage['completion_tokens']:,} out"]
    cost = cost_usd(teacher, usage["prompt_tokens"], usage["completion_tokens"])
    if cost is not None:
        parts.append(f"${cost:,.4f}")
    errors = sum(v for k, v in stats.items() if k in ("rate_limited", "server_errors", "timeouts",
                                                      "connection_errors", "malformed", "api_errors"))
    if errors:
        parts.append(f"errors {errors} (retries {stats.get('retries', 0)})")
    if failed:
        parts.append(f"failed {failed}")
    return " · ".join(parts)


# ----- dry run ---------------------------------------------------------------------------------

def estimate_generate(spec: JobSpec, workspace: "Workspace", inputs: "PreparedInputs | None" = None) -> dict[str, Any]:
    """What the teacher stage would ask and cost, without asking: requests, prompt tokens, output bound, cost."""
    from distilflow.prepare import prepare_inputs
    from distilflow.teachers.token_estimate import estimate_prompt_tokens, token_counter

    inputs = inputs or prepare_inputs(spec)
    params = generation_params(spec)
    teacher = load_teacher(spec.teacher)
    try:
        identity = teacher.identity()
        requests: dict[str, TeacherRequest] = {}
        rows: dict[str, int] = {}
        for split in TEACHER_SPLITS:
            examples = inputs.examples.get(split, [])
            if examples:
                rows[split] = len(examples)
                requests.update((r.key, r) for r in build_requests(examples, spec, identity, params))
        cache_path = workspace.job(spec.name or "").teacher_cache
        known: set[str] = set()
        if cache_path.exists():
            cache = TeacherCache(cache_path)
            known = cache.known_keys(requests)
            cache.close()
        pending = [r for k, r in requests.items() if k not in known]
        if spec.teacher.backend == "hf":
            count, method = (lambda m: teacher.count_tokens(m) or 0), "the teacher's tokenizer"
        else:
            counter, method = token_counter()
            count = lambda m: estimate_prompt_tokens(m, counter)  # noqa: E731
        prompt_tokens = sum(count(r.messages) for r in pending)
    finally:
        teacher.close()
    completion_bound = len(pending) * params.num_samples * params.max_tokens
    input_cost = cost_usd(spec.teacher, prompt_tokens, 0)
    output_cost = cost_usd(spec.teacher, 0, completion_bound)
    return {
        "backend": spec.teacher.backend, "model": spec.teacher.model, "base_url": spec.teacher.base_url,
        "rows": rows, "unique_prompts": len(requests), "cached": len(known), "requests": len(pending),
        "num_samples": params.num_samples, "max_tokens": params.max_tokens,
        "prompt_tokens": prompt_tokens, "completion_tokens_max": completion_bound, "token_method": method,
        "input_cost_usd": input_cost, "output_cost_usd_max": output_cost,
        "cost_usd_max": None if input_cost is None else input_cost + (output_cost or 0.0),
    }


def format_estimate(estimate: dict[str, Any]) -> str:
    e = estimate
    where = f" at {e['base_url']}" if e.get("base_url") else ""
    lines = [
        "dry run: nothing was sent to the teacher",
        f"teacher:           {e['backend']} {e['model']}{where}",
        f"inputs:            {sum(e['rows'].values()):,} ("
        + ", ".join(f"{split} {n:,}" for split, n in e["rows"].items()) + f"), {e['unique_prompts']:,} distinct prompts",
        f"already answered:  {e['cached']:,} (in the teacher cache)",
        f"requests to send:  {e['requests']:,} ({e['num_samples']} sample{'s' if e['num_samples'] > 1 else ''} each;"
        " retries not counted)",
        f"prompt tokens:     ~{e['prompt_tokens']:,} (estimated with {e['token_method']})",
        f"completion tokens: at most {e['completion_tokens_max']:,} (max_tokens {e['max_tokens']} x "
        f"{e['num_samples']} x {e['requests']:,})",
    ]
    if e["cost_usd_max"] is None:
        lines.append("cost:              unknown (set teacher.price_per_million_input_tokens / _output_tokens)")
    else:
        lines.append(f"cost:              ~${e['input_cost_usd']:,.4f} input + at most ${e['output_cost_usd_max'] or 0:,.4f}"
                     f" output = at most ${e['cost_usd_max']:,.4f}")
    return "\n".join(lines)


def dry_run_text(spec_path: Path, workspace: str | None) -> str:
    """`distilflow generate --dry-run`: the estimate as text; reads the spec, data and cache, writes nothing."""
    from distilflow.spec import load_spec
    from distilflow.workspace import Workspace

    spec = load_spec(spec_path)
    return format_estimate(estimate_generate(spec, Workspace.open(workspace)))
