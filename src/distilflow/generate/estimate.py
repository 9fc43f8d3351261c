"""The teacher stage's dry run: what it would ask and cost (requests, prompt tokens, output bound, dollars),
reading the spec, the data and the cache, sending nothing."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from distilflow.generate.ask import known_plan, plan_requests, teacher_rows
from distilflow.generate.write_inputs import (
    keyed,
    plan_round,
    quotas,
    seed_examples,
    writing_params,
)
from distilflow.jobspec import JobSpec
from distilflow.prepare import PreparedInputs, prepare_inputs
from distilflow.teachers import load_teacher
from distilflow.teachers.cache import TeacherCache
from distilflow.teachers.token_estimate import estimate_prompt_tokens, token_counter
from distilflow.workspace import Workspace


def _token_count(teacher_spec: Any, teacher: Any) -> tuple[Callable[[list[Any]], int], str]:
    """How prompts are counted: the teacher's own tokenizer for a local model, else an estimate."""
    if teacher_spec.backend == "hf":
        return (lambda m: teacher.count_tokens(m) or 0), "the teacher's tokenizer"
    counter, method = token_counter()
    return (lambda m: estimate_prompt_tokens(m, counter)), method


def estimate_generate(spec: JobSpec, workspace: Workspace, inputs: PreparedInputs | None = None,
                      teacher_index: int | None = None) -> dict[str, Any]:
    """What the teacher stage would ask and cost, without asking: requests, prompt tokens, output bound, cost.
    `teacher_index`: one of several teachers (default the job's first); under combine route, only its rows.
    With `inputs:`, the writer's requests (`writing`) and the teacher's answers to the written inputs are added."""
    inputs = inputs or prepare_inputs(spec)
    teacher_spec = spec.teacher if teacher_index is None or not spec.teachers else spec.teachers[teacher_index]
    rows = teacher_rows(spec, inputs.examples, teacher_index)
    teacher = load_teacher(teacher_spec)
    cache_path = workspace.job(spec.name or "").teacher_cache
    try:
        with TeacherCache(cache_path) if cache_path.exists() else nullcontext() as cache:  # a dry run creates nothing
            plan = plan_requests(spec, inputs.task, inputs.examples, rows, teacher.identity(), cache)
        count, method = _token_count(teacher_spec, teacher)
        pending = plan.pending
        prompt_tokens = sum(count(r.messages) for r in pending)
        sample = list(plan.unique.values())[:50]  # a written input's prompt is priced as a given one's
        per_input = sum(count(r.messages) for r in sample) / len(sample) if sample else 0.0
    finally:
        teacher.close()
    params = plan.params
    written = spec.inputs.count if spec.inputs is not None else 0
    prompt_tokens += round(per_input * written)
    requests = len(pending) + written  # at most: a written input already answered is in the cache
    completion_bound = requests * params.num_samples * params.max_tokens
    writing = estimate_writing(spec, inputs, cache_path) if spec.inputs is not None else None
    input_cost = teacher_spec.cost_usd(prompt_tokens, 0)
    output_cost = teacher_spec.cost_usd(0, completion_bound)
    total = None if input_cost is None else input_cost + (output_cost or 0.0)
    if writing is not None and total is not None and writing["cost_usd_max"] is not None:
        total += writing["cost_usd_max"]
    return {
        "backend": teacher_spec.backend, "model": teacher_spec.model, "base_url": teacher_spec.base_url,
        "rows": {**plan.rows_by_split(), **({"written": written} if written else {})},
        "unique_prompts": len(plan.unique) + written, "cached": len(plan.known),
        "requests": requests, "num_samples": params.num_samples, "max_tokens": params.max_tokens,
        "prompt_tokens": prompt_tokens, "completion_tokens_max": completion_bound, "token_method": method,
        "input_cost_usd": input_cost, "output_cost_usd_max": output_cost, "cost_usd_max": total,
        **({"writing": writing} if writing is not None else {}),
    }


def estimate_writing(spec: JobSpec, inputs: PreparedInputs, cache_path: Path) -> dict[str, Any]:
    """The writer's first round (its later rounds only replace dropped duplicates) and its rewrite round."""
    assert spec.inputs is not None
    writer_spec = spec.inputs.writer_spec(spec.teacher)
    fmt = writer_spec.prompt_format
    task = inputs.task
    seeds = seed_examples(spec, task, inputs.examples["train"])
    planned = plan_round(spec, task, seeds, quotas(spec.inputs.count, task.write_targets() or ("",)), 0, fmt)
    writer = load_teacher(writer_spec)
    try:
        requests = keyed(planned, spec, fmt, "write0", writer.identity())
        with TeacherCache(cache_path) if cache_path.exists() else nullcontext() as cache:
            plan = known_plan(writing_params(spec, fmt, 0), requests, cache)
        count, _ = _token_count(writer_spec, writer)
        prompt_tokens = sum(count(r.messages) for r in plan.pending)
    finally:
        writer.close()
    rewrites = round(spec.inputs.count * spec.inputs.rewrite)
    asked = len(plan.pending) + rewrites
    completion_bound = asked * spec.inputs.max_tokens
    input_cost = writer_spec.cost_usd(prompt_tokens, 0)
    output_cost = writer_spec.cost_usd(0, completion_bound)
    return {"model": writer_spec.model, "prompt_format": fmt, "requests": asked, "cached": len(plan.known),
            "rewrites": rewrites, "prompt_tokens": prompt_tokens, "completion_tokens_max": completion_bound,
            "cost_usd_max": None if input_cost is None else input_cost + (output_cost or 0.0)}


def format_estimate(estimate: dict[str, Any]) -> str:
    e = estimate
    urls = e.get("base_url") or []
    where = f" at {', '.join(urls) if isinstance(urls, list) else urls}" if urls else ""
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
    w = e.get("writing")
    if w:
        lines.append(f"writing inputs:    {w['requests']:,} requests to {w['model']} ({w['prompt_format']} prompts; "
                     f"{w['cached']:,} already answered, {w['rewrites']:,} rewrites), ~{w['prompt_tokens']:,} prompt "
                     f"tokens, at most {w['completion_tokens_max']:,} completion tokens"
                     + ("" if w["cost_usd_max"] is None else f", at most ${w['cost_usd_max']:,.4f}"))
    if e["cost_usd_max"] is None:
        lines.append("cost:              unknown (set teacher.price_per_million_input_tokens / _output_tokens)")
    else:
        lines.append(f"cost:              ~${e['input_cost_usd']:,.4f} input + at most ${e['output_cost_usd_max'] or 0:,.4f}"
                     f" output = at most ${e['cost_usd_max']:,.4f}")
    return "\n".join(lines)


def dry_run_text(spec: JobSpec, workspace: Workspace) -> str:
    """`distilflow generate --dry-run`: the estimate as text; reads the spec, data and cache, writes nothing. With
    several teachers, one block per teacher (best_of: an upper bound, later teachers answer only what earlier
    ones fail)."""
    if spec.combine is None:
        return format_estimate(estimate_generate(spec, workspace))
    inputs = prepare_inputs(spec)
    blocks = [f"several teachers, combine: {spec.combine}"
              + (" (the figures of each teacher after the first are upper bounds: it is asked only where the ones "
                 "before it fail)" if spec.combine == "best_of" else "")]
    for index, teacher in enumerate(spec.teachers or []):
        text = format_estimate(estimate_generate(spec, workspace, inputs, index))
        blocks.append(f"--- {teacher.name} ---\n" + text.split("\n", 1)[1])
    return "dry run: nothing was sent to the teachers\n" + "\n".join(blocks)
