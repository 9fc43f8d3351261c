"""Stage 5, report: teacher vs baseline vs distilled, as report.json (every figure) and report.md."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from distilflow.data import write_json_atomic, write_text_atomic
from distilflow.tasks import get_task

if TYPE_CHECKING:
    from distilflow.runner import StageContext

LABELS = ("teacher", "baseline", "distilled")


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def comparison(models: dict[str, dict[str, Any]], primary: str) -> dict[str, Any]:
    """Retention, improvement over baseline, speed-up and memory reduction (None where not measurable)."""
    def score(label: str) -> float | None:
        return models.get(label, {}).get("task_metrics", {}).get(primary)

    def field(label: str, name: str) -> float | None:
        return models.get(label, {}).get(name)

    teacher, baseline, distilled = score("teacher"), score("baseline"), score("distilled")
    speedup = _ratio(field("teacher", "latency_mean_s"), field("distilled", "latency_mean_s"))
    memory_ratio = _ratio(field("distilled", "peak_memory_mb"), field("teacher", "peak_memory_mb"))
    param_ratio = _ratio(field("distilled", "parameters"), field("teacher", "parameters"))
    return {
        "primary_metric": primary,
        "retention": _ratio(distilled, teacher),
        "improvement_over_baseline": None if distilled is None or baseline is None else distilled - baseline,
        "speedup": speedup,
        "latency_reduction": None if speedup is None else 1 - 1 / speedup,
        "memory_reduction": None if memory_ratio is None else 1 - memory_ratio,
        "parameter_reduction": None if param_ratio is None else 1 - param_ratio,
    }


def build_report(ctx: "StageContext") -> dict[str, Any]:
    task = get_task(ctx.spec.task_type)
    models: dict[str, dict[str, Any]] = {}
    for label in LABELS:
        path = ctx.paths.eval_model(label) / "metrics.json"
        if path.exists():
            models[label] = json.loads(path.read_text())
    generate = ctx.stage_metrics("generate")
    train = ctx.stage_metrics("train")
    return {
        "job": ctx.name,
        "task_type": ctx.spec.task_type,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "teacher": {"model": ctx.spec.teacher.model, "backend": ctx.spec.teacher.backend},
        "student": {"model": ctx.spec.student.model},
        "metric_names": list(task.metric_names),
        "models": models,
        "comparison": comparison(models, task.primary_metric),
        "teacher_stage": generate,
        "training": train,
    }


def _fmt(value: Any, kind: str = "num") -> str:
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{value * 100:.1f}%"
    if kind == "x":
        return f"{value:.2f}x"
    if kind == "int":
        return f"{int(value):,}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render_markdown(report: dict[str, Any]) -> str:
    c = report["comparison"]
    primary = c["primary_metric"]
    lines = [
        f"# Distillation report: {report['job']}",
        "",
        f"Task: **{report['task_type']}**. Teacher: `{report['teacher']['model']}` ({report['teacher']['backend']}). "
        f"Student: `{report['student']['model']}`.",
        "",
        "## Summary",
        "",
        f"- Retention (distilled / teacher {primary}): **{_fmt(c['retention'], 'pct')}**",
        f"- Improvement over the baseline student ({primary}, absolute): **{_fmt(c['improvement_over_baseline'])}**",
        f"- Speed-up (teacher latency / distilled latency): **{_fmt(c['speedup'], 'x')}**"
        f" (latency reduction {_fmt(c['latency_reduction'], 'pct')})",
        f"- Memory reduction (peak): **{_fmt(c['memory_reduction'], 'pct')}**;"
        f" parameter reduction: {_fmt(c['parameter_reduction'], 'pct')}",
        "",
        "## Models",
        "",
    ]
    metric_names = report["metric_names"]
    header = ["model", *metric_names, "n", "latency mean (s)", "latency p50 (s)", "output tok/s", "peak memory (MB)",
              "parameters"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label in LABELS:
        m = report["models"].get(label)
        if m is None:
            lines.append(f"| {label} | " + " | ".join(["not evaluated"] + [""] * (len(header) - 2)) + " |")
            continue
        cells = [label, *[_fmt(m["task_metrics"].get(k)) for k in metric_names], _fmt(m.get("scored_examples"), "int"),
                 _fmt(m.get("latency_mean_s")), _fmt(m.get("latency_p50_s")), _fmt(m.get("output_tokens_per_s")),
                 _fmt(m.get("peak_memory_mb")), _fmt(m.get("parameters"), "int")]
        lines.append("| " + " | ".join(cells) + " |")
    any_model = next(iter(report["models"].values()), {})
    lines += ["", f"Latency is per answer at batch size 1, greedy decoding, warm-up excluded. Peak memory is "
              f"{'CUDA max allocated' if any_model.get('peak_memory_kind') == 'cuda_max_allocated' else 'the peak resident memory of a process that loaded only that model (it includes the Python runtime)'}.", ""]
    stage = report.get("teacher_stage") or {}
    if stage:
        lines += ["## Teacher data", "",
                  f"- Requests: {stage.get('requests', 'n/a')}, failed: {stage.get('failed', 0)}",
                  f"- Accepted rows: {json.dumps(stage.get('accepted', {}))}; rejected: {stage.get('rejected', 0)}"
                  f" {json.dumps(stage.get('rejected_by_reason', {}))}",
                  f"- Tokens in/out: {stage.get('prompt_tokens', 'n/a')}/{stage.get('completion_tokens', 'n/a')}", ""]
    train = report.get("training") or {}
    if train:
        lines += ["## Training", "", f"- Method: {train.get('method')}, steps: {train.get('steps')}, "
                  f"final train loss: {_fmt(train.get('train_loss'))}, validation loss: {_fmt(train.get('validation_loss'))}", ""]
    return "\n".join(lines)


def run_report(ctx: "StageContext") -> dict[str, Any]:
    report = build_report(ctx)
    write_json_atomic(ctx.paths.report_json, report)
    write_text_atomic(ctx.paths.report_md, render_markdown(report))
    return {"report": str(ctx.paths.report_md), **{k: v for k, v in report["comparison"].items() if v is not None}}
