"""The judge's part of the dry run: what each judge of `evaluation.judge` would be asked and cost (requests, prompt
tokens, output bound, dollars), reading the spec, the data, the models' answers where they exist and the cache;
sending nothing. Before the models have answered, each answer is priced at its bound (`evaluation.max_tokens`
words), so the figures are upper bounds; once they have, the requests are the very ones the judge will be sent."""

from __future__ import annotations

from typing import Any

from distilflow.evaluate.judge import judge_section, model_answers
from distilflow.evaluate.judge_plan import judge_identity, judge_params, plan_items, with_keys
from distilflow.jobspec import JobSpec
from distilflow.prepare import PreparedInputs, prepare_inputs
from distilflow.teachers import load_teacher
from distilflow.teachers.cache import TeacherCache
from distilflow.teachers.token_estimate import estimate_prompt_tokens, token_counter
from distilflow.workspace import Workspace


def _answers(spec: JobSpec, workspace: Workspace, inputs: PreparedInputs) -> tuple[dict[str, dict[str, str]], bool]:
    """Every model's answers to the test inputs: the real ones once evaluated, else a stand-in of bound length."""
    found = model_answers(workspace.job(spec.name or ""), spec.evaluation.models)
    test = inputs.examples.get("test", [])
    words = max(0, spec.evaluation.max_tokens - 2)

    def bound(label: str, example_id: str) -> str:  # of its longest length, and different from every other answer
        return " ".join([label, example_id, *["word"] * words])

    exact = all(label in found for label in spec.evaluation.models)
    return {label: found.get(label) or {e.id: bound(label, e.id) for e in test}
            for label in spec.evaluation.models}, exact


def estimate_judges(spec: JobSpec, workspace: Workspace, inputs: PreparedInputs | None = None) -> list[dict[str, Any]]:
    """One estimate per judge (none without `evaluation.judge`)."""
    judges = spec.evaluation.judges()
    if not judges:
        return []
    inputs = inputs or prepare_inputs(spec)
    answers, exact = _answers(spec, workspace, inputs)
    cache_path = workspace.job(spec.name or "").teacher_cache
    counter, method = token_counter()
    estimates = []
    for index, judge in enumerate(judges):
        backend = load_teacher(judge, section=judge_section(judge, index, isinstance(spec.evaluation.judge, list)))
        try:
            params = judge_params(judge)
            items, controls = plan_items(judge, inputs.task, inputs.examples.get("test", []), answers)
            with_keys(items, judge_identity(backend.identity()), params)
        finally:
            backend.close()
        requests = {i.key: i.messages for i in items}
        known: set[str] = set()
        if cache_path.exists():
            with TeacherCache(cache_path) as cache:
                known = cache.known_keys(requests)
        pending = [m for k, m in requests.items() if k not in known]
        prompt_tokens = sum(estimate_prompt_tokens(m, counter) for m in pending)
        completion_bound = len(pending) * params.max_tokens
        input_cost, output_cost = judge.cost_usd(prompt_tokens, 0), judge.cost_usd(0, completion_bound)
        estimates.append({
            "name": judge.name, "backend": judge.backend, "model": judge.model, "base_url": judge.base_url,
            "mode": judge.mode, "requests": len(requests), "controls": len(controls),
            "control_requests": sum(i.group.startswith("control:") for i in items), "cached": len(known),
            "to_send": len(pending), "exact": exact, "prompt_tokens": prompt_tokens, "token_method": method,
            "max_tokens": params.max_tokens, "completion_tokens_max": completion_bound,
            "input_cost_usd": input_cost, "output_cost_usd_max": output_cost,
            "cost_usd_max": None if input_cost is None else input_cost + (output_cost or 0.0)})
    return estimates


def format_judge_estimate(e: dict[str, Any]) -> str:
    where = f" at {e['base_url']}" if e.get("base_url") else ""
    basis = ("the models' answers" if e["exact"] else
             "answers of evaluation.max_tokens words (the models have not answered yet: upper bounds)")
    lines = [
        f"judge {e['name']}:{' ' * max(1, 11 - len(e['name']))}{e['backend']} {e['model']}{where}, mode {e['mode']}",
        f"judge requests:    {e['requests']:,} ({e['control_requests']:,} of them on {e['controls']} control inputs;"
        f" priced on {basis})",
        f"already answered:  {e['cached']:,} (in the teacher cache)",
        f"requests to send:  {e['to_send']:,} (and at most as many again if every reply had to be asked twice)",
        f"prompt tokens:     ~{e['prompt_tokens']:,} (estimated with {e['token_method']})",
        f"completion tokens: at most {e['completion_tokens_max']:,} (max_tokens {e['max_tokens']} x {e['to_send']:,})",
    ]
    if e["cost_usd_max"] is None:
        lines.append("cost:              unknown (set evaluation.judge.price_per_million_input_tokens / _output_tokens)")
    else:
        lines.append(f"cost:              ~${e['input_cost_usd']:,.4f} input + at most ${e['output_cost_usd_max'] or 0:,.4f}"
                     f" output = at most ${e['cost_usd_max']:,.4f}")
    return "\n".join(lines)


def judge_dry_run_text(spec: JobSpec, workspace: Workspace) -> str:
    """The judges' block of `distilflow generate --dry-run` (empty without a judge)."""
    return "\n".join(format_judge_estimate(e) for e in estimate_judges(spec, workspace))
