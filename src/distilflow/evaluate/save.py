"""Scoring one model's predictions (task metrics with bootstrap intervals) and saving its two files,
predictions.jsonl and metrics.json, the same way whether it answered here or its answers were recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distilflow.evaluate.config import WorkerConfig
from distilflow.io import write_json_atomic, write_jsonl_atomic
from distilflow.results import ModelResult, Prediction
from distilflow.workspace import METRICS_FILE, PREDICTIONS_FILE


def save_result(config: WorkerConfig, predictions: list[Prediction], figures: dict[str, Any]) -> ModelResult:
    """Score the predictions and write predictions.jsonl and metrics.json into the config's folder."""
    from distilflow.tasks import get_task
    from distilflow.tasks.scoring import score_with_intervals

    unknown = set(figures) - set(ModelResult.model_fields)
    assert not unknown, f"figures ModelResult does not define: {sorted(unknown)}"  # a misspelt figure
    task = get_task(config.task_type, config.labels or None, config.task_options)
    rows = [p.to_json() for p in predictions]
    scores = score_with_intervals(task, rows, config.settings.bootstrap_samples, config.settings.bootstrap_seed)
    fields = {"label": config.label, "model": config.model, "kind": config.kind, "evaluated": True,
              "task_type": config.task_type, "primary_metric": task.primary_metric, **scores, "examples": len(rows),
              "degeneration": answer_checks(config, predictions), **figures, **config.described(),
              "fingerprint": config.fingerprint}
    if config.labels:
        fields["labels"] = config.labels
    result = ModelResult(**fields)
    write_jsonl_atomic(config.predictions_path, rows)
    write_json_atomic(config.metrics_path, result.to_json())
    return result


def answer_checks(config: WorkerConfig, predictions: list[Prediction]) -> dict[str, float | None]:
    """The share of degenerate answers (empty, repetitive, non-words, unfinished), judged against the words of the
    test inputs and references."""
    from distilflow.metrics.degeneration import check_answer, degeneration_shares, vocabulary

    texts = [m["content"] for e in config.examples for m in e.messages] + [
        str(r) for e in config.examples for r in (e.reference if isinstance(e.reference, list) else [e.reference])
        if r is not None]
    known = vocabulary(texts)
    max_tokens = None if config.choices else config.settings.max_tokens
    return degeneration_shares([
        check_answer(p.prediction, known, p.timing.output_tokens if p.timing else None, max_tokens)
        for p in predictions if p.error is None])


def save_not_evaluated(output_dir: Path, label: str, model: str | None, reason: str) -> ModelResult:
    """A model that could not be evaluated: its reason in metrics.json, and no stale predictions beside it."""
    result = ModelResult.not_evaluated(label, model, reason)
    write_json_atomic(output_dir / METRICS_FILE, result.to_json())
    (output_dir / PREDICTIONS_FILE).unlink(missing_ok=True)
    return result
