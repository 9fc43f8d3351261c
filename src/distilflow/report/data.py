"""The figures of the report (report.json holds all of them): each model's evaluation result (results.py) and
how the models compare. The table cells report.md and report.html both show are in tables.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilflow.io import read_json
from distilflow.report.data_section import data_section
from distilflow.metrics.intervals import intervals_overlap
from distilflow.results import PEAK_RSS, CUDA_MAX_ALLOCATED, Interval, ModelResult, Prediction, read_predictions
from distilflow.jobspec import MODEL_LABELS
from distilflow.workspace import teacher_eval_label

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext
    from distilflow.tasks import Task

ResultLike = ModelResult | dict[str, Any]  # a result, or its JSON form (as report.json holds it)


# ----- comparisons --------------------------------------------------------------------------------------


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _reduction(new: float | None, old: float | None) -> float | None:
    ratio = _ratio(new, old)
    return None if ratio is None else 1 - ratio


def _overlap(a: Interval | None, b: Interval | None) -> bool | None:
    return intervals_overlap(a.model_dump() if a else None, b.model_dump() if b else None)


def relative(reference: ResultLike, other: ResultLike, metric_names: list[str]) -> dict[str, Any]:
    """`other` against `reference` (the teacher): quality kept, speed gained, memory and size saved."""
    ref, new = ModelResult.of(reference), ModelResult.of(other)
    return {
        "retention": {name: _ratio(new.score(name), ref.score(name)) for name in metric_names},
        "intervals_overlap": {name: _overlap(ref.interval(name), new.interval(name)) for name in metric_names},
        "speedup": _ratio(ref.latency_mean_s, new.latency_mean_s),
        # Against the reference run without its shared-prefix cache (how a few-shot prompt is often first served).
        "speedup_vs_uncached": _ratio(ref.uncached_latency_mean_s, new.latency_mean_s),
        "latency_reduction": _reduction(new.latency_mean_s, ref.latency_mean_s),
        "p95_latency_reduction": _reduction(new.latency_p95_s, ref.latency_p95_s),
        "ttft_speedup": _ratio(ref.ttft_mean_s, new.ttft_mean_s),
        "throughput_speedup": _ratio(new.throughput_answers_per_s, ref.throughput_answers_per_s),
        "memory_reduction": _reduction(new.peak_memory_mb, ref.peak_memory_mb),
        "model_memory_reduction": _reduction(new.model_memory_mb, ref.model_memory_mb),
        "parameter_reduction": _reduction(new.parameters, ref.parameters),
        "size_reduction": _reduction(new.size_on_disk_mb, ref.size_on_disk_mb),
        "reference_over_network": bool(ref.network),
    }


def improvement(baseline: ResultLike, distilled: ResultLike, metric_names: list[str]) -> dict[str, Any]:
    """Distilled over baseline per metric: absolute and relative gain, and whether the 95% intervals overlap
    (no overlap: the gain is unlikely to be noise; overlap: it may be)."""
    before, after = ModelResult.of(baseline), ModelResult.of(distilled)
    out = {}
    for name in metric_names:
        b, d = before.score(name), after.score(name)
        out[name] = {
            "absolute": None if b is None or d is None else d - b,
            "relative": None if b is None or d is None or not b else (d - b) / b,
            "intervals_overlap": _overlap(before.interval(name), after.interval(name)),
        }
    return out


def comparison(models: dict[str, ResultLike], metric_names: list[str], primary: str) -> dict[str, Any]:
    """Teacher vs distilled (retention, speed, memory) and baseline vs distilled (improvement)."""
    teacher, baseline, distilled = (ModelResult.of(models.get(label)) for label in MODEL_LABELS)
    rel = relative(teacher, distilled, metric_names)
    gain = improvement(baseline, distilled, metric_names)
    return {
        "primary_metric": primary,
        # Headline figures on the primary metric (flat, also stored as the report stage's metrics).
        "retention": rel["retention"].get(primary),
        "improvement_over_baseline": gain[primary]["absolute"],
        "improvement_intervals_overlap": gain[primary]["intervals_overlap"],
        "speedup": rel["speedup"],
        "speedup_vs_uncached": rel["speedup_vs_uncached"],
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
    by_label = {label: {p.id: p for p in map(Prediction.from_json, rows)} for label, rows in predictions.items()}
    first = next((rows for rows in predictions.values() if rows), [])
    out = []
    for row in map(Prediction.from_json, first[:limit]):
        answers = {label: by_label.get(label, {}).get(row.id) for label in labels}
        out.append({"id": row.id, "input": row.input, "reference": reference_text(row.reference),
                    "answers": {label: _shown(answer) for label, answer in answers.items()}})
    return out


def _shown(answer: Prediction | None) -> str | None:
    if answer is None:
        return None
    return answer.prediction if answer.error is None else f"(no answer: {answer.error})"


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


def measurement_notes(models: dict[str, ResultLike]) -> list[str]:
    notes = ["Every model answered the same test inputs with greedy decoding; warm-up answers were excluded "
             "from timing. Latency is per answer at batch size 1; throughput is the whole test set at the "
             "evaluation batch size."]
    results = {label: ModelResult.of(m) for label, m in models.items()}
    kinds = {m.peak_memory_kind for m in results.values() if m.evaluated}
    if PEAK_RSS in kinds:
        notes.append("Peak memory on CPU is the peak resident memory (VmHWM) of a worker process that loaded only "
                     "that model; it includes the Python runtime, so 'model memory' (the peak minus the process "
                     "before loading) is shown too.")
    if CUDA_MAX_ALLOCATED in kinds:
        notes.append("Peak memory on GPU is torch.cuda.max_memory_allocated during answering.")
    for label, m in results.items():
        if m.network:
            notes.append(f"The {label} is an API endpoint ({m.base_url or 'OpenAI'}): its latency and time "
                         f"to first token are measured over the network and include network and queueing time; "
                         f"its memory and parameters are not measurable from here.")
        notes += _answer_notes(label, m)
        if m.note:
            notes.append(f"{label}: {m.note}.")
        if not m.evaluated:
            notes.append(f"The {label} was not evaluated: {m.reason}.")
        if str(m.model or "").endswith(".gguf"):
            notes.append(f"The {label}'s size on disk is its quantized .gguf file; it runs dequantized, as the "
                         f"memory figures show. Trained students are saved unquantized (safetensors).")
    notes.append("Intervals are 95% percentile-bootstrap intervals over the test examples (corpus BLEU/chrF "
                 "resample the corpus); n is the number of scored examples.")
    return notes


def _answer_notes(label: str, m: ModelResult) -> list[str]:
    """Where a model's answers came from, when not every one was asked and timed in this run."""
    notes = []
    if m.answers_from_cache:
        notes.append(f"The {label}: {m.answers_from_cache} of {m.examples} answers were read from the answer cache "
                     f"(asked in an earlier run, not paid again): they count for quality, not for speed; latency is "
                     f"over the {m.timed_answers or 0} answers asked in this run, and throughput over the same inputs.")
    if m.failed_answers:
        notes.append(f"The {label} gave no answer to {m.failed_answers} of {m.examples} inputs (the endpoint refused "
                     f"them; reasons in its predictions.jsonl): they are scored as empty answers.")
    return notes


NOT_MEASURED = ("Quality, speed and memory were not measured: this job has no test set (test_data). The teacher-stage "
                "and training figures are complete; add test_data to the job spec and run it again to score the "
                "teacher, the baseline and the distilled student.")


def assemble(task: "Task", labels: list[str], models: dict[str, ResultLike],
             predictions: dict[str, list[dict[str, Any]]], examples_in_report: int) -> dict[str, Any]:
    """The parts every report shares (a job's report and a `compare` of any models)."""
    return {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "task_type": task.name,
        "metric_names": list(task.metric_names),
        "primary_metric": task.primary_metric,
        "labels": labels,
        "models": {label: ModelResult.of(m).to_json() for label, m in models.items()},
        "examples": example_rows(predictions, labels, examples_in_report),
        "notes": measurement_notes(models),
    }


def job_results(ctx: "StageContext", labels: list[str]) -> dict[str, ModelResult]:
    """Each model's metrics.json as the evaluate stage wrote it, with its agreement with the teacher."""
    agreement = read_json(ctx.paths.agreement, default={}) or {}
    missing = ("no test_data in the job spec (score the registered models with models.evaluate)"
               if not ctx.spec.test_data else "no evaluation results (run the evaluate stage)")
    models = {}
    for label in labels:
        result = ModelResult.read(ctx.paths.eval_metrics(label)) or ModelResult(
            label=label, evaluated=False, reason=missing)
        if label in agreement:
            result.agreement_with_teacher = agreement[label]
        models[label] = result
    return models


def teacher_test_scores(ctx: "StageContext") -> dict[str, Any]:
    """Several teachers: each one's primary metric on the test set (the first is the "teacher" model)."""
    scores = {}
    for index, teacher in enumerate(ctx.spec.teachers or []):
        result = ModelResult.read(ctx.paths.eval_metrics(teacher_eval_label(index, teacher.name)))
        if result is not None and result.evaluated:
            scores[teacher.name] = result.task_metrics.get(ctx.task.primary_metric)
    return scores


def stage_seconds(ctx: "StageContext") -> dict[str, float]:
    """How long each stage took in its last run (the report's own stage is still running), from the job store."""
    return ctx.store.get(ctx.name).stage_seconds() if ctx.store is not None else {}


def build_report(ctx: "StageContext") -> dict[str, Any]:
    labels = [label for label in MODEL_LABELS if label in ctx.spec.evaluation.models]
    models = {label: result.to_json(without_fingerprint=True) for label, result in job_results(ctx, labels).items()}
    predictions = {label: read_predictions(ctx.paths.eval_predictions(label)) for label in labels}
    task = ctx.task
    report = assemble(task, labels, models, predictions, ctx.spec.evaluation.examples_in_report)
    train = dict(ctx.stage_metrics("train"))
    train["loss_curve"] = loss_curve(ctx.paths.train_log)
    report.update({
        "job": ctx.name,
        "teacher": {"model": ctx.spec.teacher.model, "backend": ctx.spec.teacher.backend,
                    **({"team": [t.name for t in ctx.spec.teachers], "combine": ctx.spec.combine}
                       if ctx.spec.combine else {})},
        "student": {"model": ctx.spec.student.model},
        "comparison": comparison(models, list(task.metric_names), task.primary_metric),
        "teacher_stage": ctx.stage_metrics("generate"),
        "data": data_section(ctx),
        "training": train,
        "stage_seconds": stage_seconds(ctx),
    })
    if ctx.spec.teachers and len(ctx.spec.teachers) > 1:
        report["teacher_test_scores"] = teacher_test_scores(ctx)
    tuning = read_json(ctx.paths.tune_summary, default=None)
    if tuning:  # distilflow tune ran: its trials and the chosen student's test score
        report["tuning"] = tuning
    report.update(task.report_sections(predictions))
    judged = read_json(ctx.paths.judge_summary, default=None) if ctx.spec.evaluation.judge else None
    if judged:  # the judge's figures; for a generative task they make the headline
        report["judge"] = {**judged, "headline": task.free_text}
    if not ctx.examples("test"):
        report.update(not_measured=NOT_MEASURED, notes=[NOT_MEASURED])
    return report
