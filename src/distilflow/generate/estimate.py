"""The teacher stage's dry run: what it would ask and cost (requests, prompt tokens, output bound, dollars),
reading the spec, the data and the cache, sending nothing."""

from __future__ import annotations

from typing import Any

from distilflow.prepare import PreparedInputs
from distilflow.prepare import prepare_inputs
from distilflow.generate.combine import route_of
from distilflow.jobspec import JobSpec, TeacherSpec
from distilflow.teachers import TeacherRequest, load_teacher
from distilflow.teachers.cache import TeacherCache
from distilflow.teachers.requests import build_requests, teacher_plan
from distilflow.teachers.token_estimate import estimate_prompt_tokens, token_counter
from distilflow.workspace import Workspace

TEACHER_SPLITS = ("train", "validation")


def estimate_generate(spec: JobSpec, workspace: Workspace, inputs: PreparedInputs | None = None,
                      teacher_spec: TeacherSpec | None = None) -> dict[str, Any]:
    """What the teacher stage would ask and cost, without asking: requests, prompt tokens, output bound, cost.
    `teacher_spec`: one of several teachers (default the job's first); under combine route, only its rows."""
    inputs = inputs or prepare_inputs(spec)
    params, shots = teacher_plan(spec, inputs.task, inputs.examples["train"])
    teacher_spec = teacher_spec or spec.teacher
    teacher = load_teacher(teacher_spec)
    try:
        identity = teacher.identity()
        requests: dict[str, TeacherRequest] = {}
        rows: dict[str, int] = {}
        for split in TEACHER_SPLITS:
            examples = inputs.examples.get(split, [])
            if spec.combine == "route" and spec.teachers:
                mine = spec.teachers.index(teacher_spec)  # type: ignore[arg-type]
                examples = [e for e in examples if route_of(e, spec.teachers) == mine]
            if examples:
                rows[split] = len(examples)
                requests.update((r.key, r) for r in build_requests(examples, spec, identity, params, shots))
        cache_path = workspace.job(spec.name or "").teacher_cache
        known: set[str] = set()
        if cache_path.exists():
            cache = TeacherCache(cache_path)
            known = cache.known_keys(requests)
            cache.close()
        pending = [r for k, r in requests.items() if k not in known]
        if teacher_spec.backend == "hf":
            count, method = (lambda m: teacher.count_tokens(m) or 0), "the teacher's tokenizer"
        else:
            counter, method = token_counter()
            count = lambda m: estimate_prompt_tokens(m, counter)  # noqa: E731
        prompt_tokens = sum(count(r.messages) for r in pending)
    finally:
        teacher.close()
    completion_bound = len(pending) * params.num_samples * params.max_tokens
    input_cost = teacher_spec.cost_usd(prompt_tokens, 0)
    output_cost = teacher_spec.cost_usd(0, completion_bound)
    return {
        "backend": teacher_spec.backend, "model": teacher_spec.model, "base_url": teacher_spec.base_url,
        "rows": rows, "unique_prompts": len(requests), "cached": len(known), "requests": len(pending),
        "num_samples": params.num_samples, "max_tokens": params.max_tokens,
        "prompt_tokens": prompt_tokens, "completion_tokens_max": completion_bound, "token_method": method,
        "input_cost_usd": input_cost, "output_cost_usd_max": output_cost,
        "cost_usd_max": None if input_cost is None else input_cost + (output_cost or 0.0),
    }


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
    for teacher in spec.teachers or []:
        text = format_estimate(estimate_generate(spec, workspace, inputs, teacher))
        blocks.append(f"--- {teacher.name} ---\n" + text.split("\n", 1)[1])
    return "dry run: nothing was sent to the teachers\n" + "\n".join(blocks)
