"""The figures of the report (report.json holds all of them), and the table cells both report.md and
report.html show, so the two always say the same thing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilflow.metrics.intervals import intervals_overlap

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext
    from distilflow.tasks import Task

LABELS = ("teacher", "baseline", "distilled")


# ----- comparisons --------------------------------------------------------------------------------------


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _reduction(new: float | None, old: float | None) -> float | None:
    ratio = _ratio(new, old)
    return None if ratio is None else 1 - ratio


def relative(reference: dict[str, Any], other: dict[str, Any], metric_names: list[str]) -> dict[str, Any]:
    """`other` against `reference` (the teacher): quality kept, speed gained, memory and size saved."""
    def score(model: dict[str, Any], name: str) -> float | None:
        return (model.get("task_metrics") or {}).get(name)

    return {
        "retention": {name: _ratio(score(other, name), score(reference, name)) for name in metric_names},
        "intervals_overlap": {name: intervals_overlap((reference.get("intervals") or {}).get(name),
                                                      (other.get("intervals") or {}).get(name))
                              for name in metric_names},
        "speedup": _ratio(reference.get("latency_mean_s"), other.get("latency_mean_s")),
        "latency_reduction": _reduction(other.get("latency_mean_s"), reference.get("latency_mean_s")),
        "p95_latency_reduction": _reduction(other.get("latency_p95_s"), reference.get("latency_p95_s")),
        "ttft_speedup": _ratio(reference.get("ttft_mean_s"), other.get("ttft_mean_s")),
        "throughput_speedup": _ratio(other.get("throughput_answers_per_s"), reference.get("throughput_answers_per_s")),
        "memory_reduction": _reduction(other.get("peak_memory_mb"), reference.get("peak_memory_mb")),
        "model_memory_reduction": _reduction(other.get("model_memory_mb"), reference.get("model_memory_mb")),
        "parameter_reduction": _reduction(other.get("parameters"), reference.get("parameters")),
        "size_reduction": _reduction(other.get("size_on_disk_mb"), reference.get("size_on_disk_mb")),
        "reference_over_network": bool(reference.get("network")),
    }


def improvement(baseline: dict[str, Any], distilled: dict[str, Any], metric_names: list[str]) -> dict[str, Any]:
    """Distilled over baseline per metric: absolute and relative gain, and whether the 95% intervals overlap
    (no overlap: the gain is unlikely to be noise; overlap: it may be)."""
    out = {}
    for name in metric_names:
        b = (baseline.get("task_metrics") or {}).get(name)
        d = (distilled.get("task_metrics") or {}).get(name)
        out[name] = {
            "absolute": None if b is None or d is None else d - b,
            "relative": None if b is None or d is None or not b else (d - b) / b,
            "intervals_overlap": intervals_overlap((baseline.get("intervals") or {}).get(name),
                                                   (distilled.get("intervals") or {}).get(name)),
        }
    return out


def comparison(models: dict[str, dict[str, Any]], metric_names: list[str], primary: str) -> dict[str, Any]:
    """Teacher vs distilled (retention, speed, memory) and baseline vs distilled (improvement)."""
    teacher, baseline, distilled = (models.get(label) or {} for label in LABELS)
    rel = relative(teacher, distilled, metric_names)
    gain = improvement(baseline, distilled, metric_names)
    return {
        "primary_metric": primary,
        # Headline figures on the primary metric (flat, also stored as the report stage's metrics).
        "retention": rel["retention"].get(primary),
        "improvement_over_baseline": gain[primary]["absolute"],
        "improvement_intervals_overlap": gain[primary]["intervals_overlap"],
        "speedup": rel["speedup"],
        "latency_reduction": rel["latency_reduction"],
        "memory_reduction": rel["memory_reduction"],
        "parameter_reduction": rel["parameter_reduction"],
        # Every figure.
        "distilled_vs_teacher": rel,
        "distilled_vs_baseline": gain,
        "baseline_vs_teacher": relative(teacher, baseline, metric_names),
    }


# ----- gathering ----------------------------------------------------------------------------------------


def reference_text(reference: Any) -> str:
    if reference is None:
        return ""
    if isinstance(reference, list):
        return " | ".join(str(r) for r in reference)
    return str(reference)


def example_rows(predictions: dict[str, list[dict[str, Any]]], labels: list[str], limit: int) -> list[dict[str, Any]]:
    """The first `limit` test inputs with every model's answer side by side."""
    by_label = {label: {row["id"]: row for row in rows} for label, rows in predictions.items()}
    first = next((rows for rows in predictions.values() if rows), [])
    out = []
    for row in first[:limit]:
        out.append({"id": row["id"], "input": row.get("input", ""), "reference": reference_text(row.get("reference")),
                    "answers": {label: (by_label.get(label, {}).get(row["id"]) or {}).get("prediction")
                                for label in labels}})
    return out


def loss_curve(train_log: Path) -> dict[str, list[list[float]]]:
    """Training and validation loss by optimizer step, from the train stage's student/train_log.json."""
    if not train_log.exists():
        return {}
    try:
        history = json.loads(train_log.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    curves: dict[str, list[list[float]]] = {"train_loss": [], "validation_loss": []}
    for entry in history:
        if "loss" in entry:
            curves["train_loss"].append([entry.get("step", 0), entry["loss"]])
        if "eval_loss" in entry:
            curves["validation_loss"].append([entry.get("step", 0), entry["eval_loss"]])
    return {k: v for k, v in curves.items() if v}


def measurement_notes(models: dict[str, dict[str, Any]]) -> list[str]:
    notes = ["Every model answered the same test inputs with greedy decoding; warm-up answers were excluded "
             "from timing. Latency is per answer at batch size 1; throughput is the whole test set at the "
             "evaluation batch size."]
    kinds = {m.get("peak_memory_kind") for m in models.values() if m.get("evaluated", True)}
    if "process_peak_rss" in kinds:
        notes.append("Peak memory on CPU is the peak resident memory (VmHWM) of a worker process that loaded only "
                     "that model; it includes the Python runtime, so 'model memory' (the peak minus the process "
                     "before loading) is shown too.")
    if "cuda_max_allocated" in kinds:
        notes.append("Peak memory on GPU is torch.cuda.max_memory_allocated during answering.")
    for label, m in models.items():
        if m.get("network"):
            notes.append(f"The {label} is an API endpoint ({m.get('base_url') or 'OpenAI'}): its latency and time "
                         f"to first token are measured over the network and include network and queueing time; "
                         f"its memory and parameters are not measurable from here.")
        if m.get("note"):
            notes.append(f"{label}: {m['note']}.")
        if not m.get("evaluated", True):
            notes.append(f"The {label} was not evaluated: {m.get('reason')}.")
        if str(m.get("model", "")).endswith(".gguf"):
            notes.append(f"The {label}'s size on disk is its quantized .gguf file; it runs dequantized, as the "
                         f"memory figures show. Trained students are saved unquantized (safetensors).")
    notes.append("Intervals are 95% percentile-bootstrap intervals over the test examples (corpus BLEU/chrF "
                 "resample the corpus); n is the number of scored examples.")
    return notes


def assemble(task: "Task", labels: list[str], models: dict[str, dict[str, Any]],
             predictions: dict[str, list[dict[str, Any]]], examples_in_report: int) -> dict[str, Any]:
    """The parts every report shares (a job's report and a `compare` of any models)."""
    return {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "task_type": task.name,
        "metric_names": list(task.metric_names),
        "primary_metric": task.primary_metric,
        "labels": labels,
        "models": models,
        "examples": example_rows(predictions, labels, examples_in_report),
        "notes": measurement_notes(models),
    }


def build_report(ctx: "StageContext") -> dict[str, Any]:
    labels = [label for label in LABELS if label in ctx.spec.evaluation.models]
    models: dict[str, dict[str, Any]] = {}
    predictions: dict[str, list[dict[str, Any]]] = {}
    agreement_path = ctx.paths.eval / "agreement.json"
    agreement = json.loads(agreement_path.read_text()) if agreement_path.exists() else {}
    for label in labels:
        folder = ctx.paths.eval_model(label)
        path = folder / "metrics.json"
        models[label] = json.loads(path.read_text()) if path.exists() else {
            "label": label, "evaluated": False, "reason": "no evaluation results (run the evaluate stage)"}
        models[label].pop("fingerprint", None)
        if label in agreement:
            models[label]["agreement_with_teacher"] = agreement[label]
        predictions[label] = _read_jsonl(folder / "predictions.jsonl")
    task = ctx.task
    report = assemble(task, labels, models, predictions, ctx.spec.evaluation.examples_in_report)
    train = dict(ctx.stage_metrics("train"))
    train["loss_curve"] = loss_curve(ctx.paths.student / "train_log.json")
    report.update({
        "job": ctx.name,
        "teacher": {"model": ctx.spec.teacher.model, "backend": ctx.spec.teacher.backend},
        "student": {"model": ctx.spec.student.model},
        "comparison": comparison(models, list(task.metric_names), task.primary_metric),
        "teacher_stage": ctx.stage_metrics("generate"),
        "training": train,
    })
    return report


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    from distilflow.io import iter_jsonl

    return list(iter_jsonl(path))


# ----- what the tables show (shared by report.md and report.html) ---------------------------------------


def fmt(value: Any, kind: str = "num") -> str:
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{value * 100:.1f}%"
    if kind == "x":
        return f"{value:.2f}x"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "ms":
        return f"{value * 1000:.1f}"
    if kind == "yesno":
        return "yes" if value else "no"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def score_cell(model: dict[str, Any], name: str) -> str:
    value = (model.get("task_metrics") or {}).get(name)
    interval = (model.get("intervals") or {}).get(name) or {}
    if value is None:
        return "n/a"
    if interval.get("low") is None:
        return fmt(value)
    return f"{fmt(value)} [{fmt(interval['low'])}, {fmt(interval['high'])}]"


def quality_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Model x task metric (with 95% interval), n and agreement with the teacher."""
    reference = report.get("agreement_reference", "teacher")
    header = ["model", *[f"{m} [95% CI]" for m in report["metric_names"]], "n", f"agreement with {reference}"]
    rows = []
    for label in report["labels"]:
        m = report["models"][label]
        if not m.get("evaluated", True):
            rows.append([label, *([f"not evaluated: {m.get('reason')}"] + [""] * (len(header) - 2))])
            continue
        agreement = m.get("agreement_with_teacher")
        agree = "n/a" if not agreement else (
            f"{fmt(agreement['value'])} [{fmt(agreement['low'])}, {fmt(agreement['high'])}] "
            f"({f'BLEU vs {reference}' if agreement['kind'] == 'bleu_vs_teacher' else 'same answer'})")
        rows.append([label, *[score_cell(m, name) for name in report["metric_names"]],
                     fmt(m.get("scored_examples"), "int"), agree])
    return header, rows


def performance_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "latency mean / p50 / p95 (ms)", "time to first token (ms)", "answers/s (batch)",
              "output tok/s (batch)", "peak memory (MB)", "model memory (MB)", "parameters", "size on disk (MB)",
              "cost / 1k answers"]
    rows = []
    for label in report["labels"]:
        m = report["models"][label]
        if not m.get("evaluated", True):
            rows.append([label, *(["not evaluated"] + [""] * (len(header) - 2))])
            continue
        latency = " / ".join(fmt(m.get(k), "ms") for k in ("latency_mean_s", "latency_p50_s", "latency_p95_s"))
        if m.get("network"):
            latency += " (over the network)"
        batch = m.get("throughput_batch_size")
        rows.append([label, latency, fmt(m.get("ttft_mean_s"), "ms"),
                     fmt(m.get("throughput_answers_per_s")) + (f" (bs {batch})" if batch and
                                                                m.get("throughput_answers_per_s") else ""),
                     fmt(m.get("throughput_output_tokens_per_s")), fmt(m.get("peak_memory_mb")),
                     fmt(m.get("model_memory_mb")), fmt(m.get("parameters"), "int"), fmt(m.get("size_on_disk_mb")),
                     fmt(m.get("cost_per_1000_answers"))])
    return header, rows


def summary_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs of the headline figures of a job report."""
    c = report.get("comparison")
    if not c:
        return []
    primary = c["primary_metric"]
    rel = c["distilled_vs_teacher"]
    overlap = c["improvement_intervals_overlap"]
    overlap_text = "" if overlap is None else (" (95% intervals overlap: the gain may be noise)" if overlap
                                               else " (95% intervals do not overlap)")
    network = " (teacher latency is over the network)" if rel.get("reference_over_network") else ""
    return [
        (f"Retention (distilled / teacher {primary})", fmt(c["retention"], "pct")),
        (f"Improvement over the baseline student ({primary}, absolute)",
         fmt(c["improvement_over_baseline"]) + overlap_text),
        ("Speed-up (teacher latency / distilled latency)",
         f"{fmt(c['speedup'], 'x')} (latency reduction {fmt(c['latency_reduction'], 'pct')}){network}"),
        ("Throughput speed-up (answers/s at the batch size)", fmt(rel.get("throughput_speedup"), "x")),
        ("Peak memory reduction", f"{fmt(c['memory_reduction'], 'pct')} (model memory: "
                                  f"{fmt(rel.get('model_memory_reduction'), 'pct')})"),
        ("Parameter reduction", fmt(c["parameter_reduction"], "pct")),
        ("Size on disk reduction", fmt(rel.get("size_reduction"), "pct")),
    ]


def relative_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """For a comparison of any models: each model against the first one."""
    if not report.get("relative"):
        return None
    first, primary = report["relative_to"], report["primary_metric"]
    header = ["model", f"retention of {first}'s {primary}", "95% intervals overlap", "speed-up (latency)",
              "latency reduction", "throughput speed-up", "peak memory reduction", "parameter reduction"]
    rows = []
    for label, r in report["relative"].items():
        overlap = r["intervals_overlap"].get(primary)
        rows.append([label, fmt(r["retention"].get(primary), "pct"), "n/a" if overlap is None else fmt(overlap, "yesno"),
                     fmt(r["speedup"], "x"), fmt(r["latency_reduction"], "pct"), fmt(r["throughput_speedup"], "x"),
                     fmt(r["memory_reduction"], "pct"), fmt(r["parameter_reduction"], "pct")])
    return header, rows
