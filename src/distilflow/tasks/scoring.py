"""Task scores with bootstrap intervals, and agreement between a model and the teacher on the same inputs."""

from __future__ import annotations

from typing import Any

from distilflow.metrics.intervals import bootstrap_interval
from distilflow.metrics.text import MetricStats, bleu_stats, mean_stats
from distilflow.tasks.base import Task


def score_with_intervals(task: Task, predictions: list[dict[str, Any]], samples: int, seed: int) -> dict[str, Any]:
    """Task metrics over the predictions that have a reference: values, 95% intervals and n.

    `predictions` are rows of predictions.jsonl ({"prediction", "reference", ...})."""
    scored = [p for p in predictions if p.get("reference") is not None]
    if not scored:
        return {"task_metrics": {}, "intervals": {}, "scored_examples": 0}
    stats = task.metric_stats([p["prediction"] for p in scored], [p["reference"] for p in scored])
    intervals = {name: bootstrap_interval(s, samples, seed).as_dict() for name, s in stats.items()}
    return {"task_metrics": {name: iv["value"] for name, iv in intervals.items()},
            "intervals": intervals, "scored_examples": len(scored)}


def agreement_stats(task: Task, predictions: list[str], teacher_predictions: list[str]) -> tuple[str, MetricStats]:
    """How often a model gives the teacher's answer: the same extracted answer where the task has one
    (label, number, normalised span), BLEU against the teacher's text for free text."""
    if task.free_text:
        return "bleu_vs_teacher", bleu_stats(predictions, [[t] for t in teacher_predictions])
    values = []
    for prediction, teacher in zip(predictions, teacher_predictions):
        mine, theirs = task.answer_key(prediction), task.answer_key(teacher)
        values.append(float(mine is not None and mine == theirs))
    return "answer_agreement", mean_stats(values)


def agreement_with_teacher(task: Task, model_rows: list[dict[str, Any]], teacher_rows: list[dict[str, Any]],
                           samples: int, seed: int) -> dict[str, Any] | None:
    """Agreement of one model's predictions with the teacher's, matched by example id."""
    teacher_by_id = {r["id"]: r["prediction"] for r in teacher_rows}
    pairs = [(r["prediction"], teacher_by_id[r["id"]]) for r in model_rows if r["id"] in teacher_by_id]
    if not pairs:
        return None
    kind, stats = agreement_stats(task, [p for p, _ in pairs], [t for _, t in pairs])
    return {"kind": kind, **bootstrap_interval(stats, samples, seed).as_dict()}
