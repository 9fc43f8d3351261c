"""`distilflow evaluate-model` and `client.models.evaluate/compare`: score any models on a test file, no job
needed. Each model is measured in its own worker process, exactly as in a job's evaluate stage, with the
settings of a job spec's `evaluation:` section (EvaluationSpec)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from distilflow.errors import DistilflowError
from distilflow.evaluate.config import ModelTarget, progress_steps, worker_config
from distilflow.evaluate.worker import run_worker
from distilflow.fingerprint import digest
from distilflow.jobs.progress import StageProgress
from distilflow.results import (FIGURES, IDENTITY, MEMORY_KINDS, ModelResult, metric_key, metric_names_accepted,
                                read_predictions)
from distilflow.jobspec import JOB_NAME_PATTERN, EvaluationSpec
from distilflow.tasks import get_task, read_examples
from distilflow.workspace import PREDICTIONS_FILE, Workspace

DISPLAY_NAMES = {"bleu": "BLEU", "chrf": "chrF", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L",
                 "exact_match": "exact match", "f1": "token F1"}


def _labels(targets: list[tuple[str | None, ModelTarget]]) -> list[str]:
    """Each model's label: the one it was given, else its name (the folder or file name); never one twice.

    A label names a folder of the run: a given one must be a valid name (checked before any folder is made:
    `../..` would write outside the workspace); a derived one is made valid."""
    labels: list[str] = []
    for given, target in targets:
        if given is not None and not JOB_NAME_PATTERN.fullmatch(given):
            raise DistilflowError(f"label {given!r} is not a valid name: use letters, digits, '.', '_' and '-' only "
                                  f"(at most 100), starting with a letter or digit; nothing was written")
        derived = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(target.model.rstrip("/")).name).lstrip("-._")[:100]
        base = given or derived or "model"
        label, n = base, 2
        while label in labels:
            label, n = f"{base}-{n}", n + 1
        labels.append(label)
    return labels


def _run_folder(workspace: Workspace, names: list[str]) -> Path:
    return workspace.evaluations / f"{time.strftime('%Y%m%d-%H%M%S')}-{digest(names, length=8)}"


def wanted_keys(metrics: list[str] | None, task_type: str) -> set[str] | None:
    """The result keys `metrics` asks for; an unknown name is an error before any model is loaded."""
    if not metrics:
        return None
    measured = [*get_task(task_type).metric_names, *FIGURES]
    wanted = set()
    for name in metrics:
        key = metric_key(name, measured)
        if key is None:
            raise DistilflowError(f"metric {name!r} is not measured for task {task_type} (supported: "
                                  f"{', '.join(metric_names_accepted(measured))})")
        wanted.add(key)
    return wanted


def _select(result: ModelResult, wanted: set[str] | None) -> dict[str, Any]:
    """The result with its task metrics at the top level; only the wanted figures (and who it is) if asked."""
    if wanted is None:
        return result.flat()
    kept = {name: getattr(result, name) for name in result.model_fields_set if name in wanted or name in IDENTITY}
    chosen = ModelResult(**kept, task_metrics={k: v for k, v in result.task_metrics.items() if k in wanted},
                         intervals={k: v for k, v in result.intervals.items() if k in wanted})
    return chosen.flat()


def _evaluate_all(workspace: Workspace, models: list[str | dict[str, Any]], test_data: str, task_type: str,
                  settings: EvaluationSpec) -> tuple[Path, list[str], dict[str, ModelResult]]:
    task = get_task(task_type)
    examples = read_examples(test_data, task, "test", limit=settings.max_examples)
    labels_set = list(task.for_test_file(examples).labels)  # a label set the test file settles (classification)
    targets = [ModelTarget.parse(m) for m in models]
    labels = _labels(targets)
    folder = _run_folder(workspace, [target.model for _, target in targets])
    results = {}
    for label, (_, target) in zip(labels, targets):
        config = worker_config(label, target, task_type=task_type, examples=examples, settings=settings,
                               output_dir=folder / label, cache_path=workspace.evaluation_answers, labels=labels_set)
        with StageProgress(None, "", "evaluate", progress_steps(len(examples), settings),
                           f"evaluating {label}") as progress:
            results[label] = run_worker(config, lambda done, total: progress.update(done))
        results[label].output_dir = config.output_dir
    return folder, labels, results


def evaluate_model(workspace: Workspace, model: str | dict[str, Any], test_data: str, task_type: str, *,
                   metrics: list[str] | None = None, settings: EvaluationSpec | None = None) -> dict[str, Any]:
    """Score one model; returns its figures (task metrics flat at the top level, filtered by `metrics`)."""
    wanted = wanted_keys(metrics, task_type)
    _, labels, results = _evaluate_all(workspace, [model], test_data, task_type, settings or EvaluationSpec())
    return _select(results[labels[0]], wanted)


def compare_models(workspace: Workspace, models: list[str | dict[str, Any]], test_data: str, task_type: str, *,
                   settings: EvaluationSpec | None = None) -> dict[str, Any]:
    """Score several models on the same inputs; every model is compared with the first (quality kept,
    agreement with its answers, speed-up, memory saved). Writes report.json/md/html to the run folder."""
    from distilflow.report.data import assemble, relative
    from distilflow.report.markdown import write_report_files
    from distilflow.tasks.scoring import agreement_with_teacher

    if len(models) < 2:
        raise DistilflowError("compare needs at least two models (the first is the one the others are compared with)")
    settings = settings or EvaluationSpec()
    folder, labels, results = _evaluate_all(workspace, models, test_data, task_type, settings)
    task = get_task(task_type, results[labels[0]].labels or None)
    predictions = {label: read_predictions(folder / label / PREDICTIONS_FILE) for label in labels}
    first = labels[0]
    for label in labels[1:]:
        results[label].agreement_with_teacher = agreement_with_teacher(
            task, predictions[label], predictions[first], settings.bootstrap_samples, settings.bootstrap_seed)
    report = assemble(task, labels, {label: result.to_json() for label, result in results.items()}, predictions,
                      examples_in_report=settings.examples_in_report)
    report.update({"title": f"Model comparison on {Path(test_data).name}", "agreement_reference": first,
                   "relative_to": first,
                   "relative": {label: relative(results[first], results[label], list(task.metric_names))
                                for label in labels[1:]}})
    paths = write_report_files(report, folder)
    return {**report, "report": str(paths["html"]), "output_dir": str(folder)}


def describe(flat: dict[str, Any]) -> list[str]:
    """Readable lines of one model's figures (as `evaluate_model` returns them), for the command line.
    A figure's line is shown when the figure applies to the model, as "n/a" when it could not be measured."""
    from distilflow.report.tables import fmt

    r = ModelResult.of(flat)
    lines = [f"model: {r.model} ({r.kind}, {r.device or 'n/a'})",
             f"examples: {r.examples} ({r.scored_examples or 0} with a reference)"]
    for name, interval in r.intervals.items():
        marker = " (task score)" if name == r.primary_metric else ""
        lines.append(f"{DISPLAY_NAMES.get(name, name)}{marker}: {fmt(interval.value)} [95% CI {fmt(interval.low)}, "
                     f"{fmt(interval.high)}], n={interval.n}")
    if r.has("latency_mean_s"):
        where = " over the network" if r.network else ""
        lines.append(f"latency per answer{where}: mean {fmt(r.latency_mean_s, 'ms')} ms, "
                     f"p50 {fmt(r.latency_p50_s, 'ms')} ms, p95 {fmt(r.latency_p95_s, 'ms')} ms (batch size 1)")
    if r.has("ttft_mean_s"):
        lines.append(f"time to first token: mean {fmt(r.ttft_mean_s, 'ms')} ms")
    if r.throughput_answers_per_s is not None:
        lines.append(f"throughput: {fmt(r.throughput_answers_per_s)} answers/s, "
                     f"{fmt(r.throughput_output_tokens_per_s)} output tokens/s (batch size {r.throughput_batch_size})")
    if r.has("peak_memory_mb"):
        kind = MEMORY_KINDS.get(r.peak_memory_kind or "", r.peak_memory_kind)
        lines.append(f"peak memory: {fmt(r.peak_memory_mb)} MB" + (f" ({kind})" if kind else "")
                     + (f"; model memory {fmt(r.model_memory_mb)} MB" if r.model_memory_mb else ""))
    if r.has("parameters"):
        lines.append(f"parameters: {fmt(r.parameters, 'int')}; size on disk: {fmt(r.size_on_disk_mb)} MB")
    if r.cost_per_1000_answers is not None:
        lines.append(f"cost per 1,000 answers: {fmt(r.cost_per_1000_answers)}")
    if r.task_type and "bleu" not in get_task(r.task_type).metric_names:
        lines.append(f"BLEU: n/a ({r.task_type} references are labels or numbers, not text)")
    lines.append(f"results: {r.output_dir}")
    return lines
