"""`distilflow evaluate-model` and `client.models.evaluate/compare`: score any models on a test file, no job
needed. Each model is measured in its own worker process, exactly as in a job's evaluate stage."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilflow.errors import DistilflowError
from distilflow.evaluate.stage import run_worker
from distilflow.jobs.progress import StageProgress
from distilflow.tasks import get_task, read_examples
from distilflow.workspace import Workspace

# Names a user may ask for in `metrics=[...]`, mapped to the figures of the worker's result.
METRIC_ALIASES = {"inference_time": "latency_mean_s", "latency": "latency_mean_s", "memory": "peak_memory_mb",
                  "peak_memory": "peak_memory_mb", "throughput": "throughput_answers_per_s",
                  "time_to_first_token": "ttft_mean_s", "ttft": "ttft_mean_s", "size": "size_on_disk_mb",
                  "cost": "cost_per_1000_answers", "params": "parameters"}
_ALWAYS = ("label", "model", "kind", "task_type", "primary_metric", "scored_examples", "examples", "device",
           "network", "output_dir")
DISPLAY_NAMES = {"bleu": "BLEU", "chrf": "chrF", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L",
                 "exact_match": "exact match", "f1": "token F1"}
MEMORY_KINDS = {"process_peak_rss": "peak RSS of the worker process", "cuda_max_allocated": "CUDA max allocated"}


@dataclass
class Settings:
    """How every model of one evaluation is run (the same for all: a fair comparison)."""

    max_tokens: int = 128
    max_examples: int | None = None
    device: str = "auto"
    batch_size: int = 8
    warmup: int = 1
    throughput: bool = True
    bootstrap_samples: int = 1000
    bootstrap_seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def target_config(model: str | dict[str, Any]) -> dict[str, Any]:
    """A model given as a string (HF id, folder, .gguf) or a dict {model, base_url, api_key_env, label, ...}."""
    target = {"model": model} if isinstance(model, str) else dict(model)
    if "model" not in target:
        raise DistilflowError(f"a model to evaluate needs a 'model' key (got {sorted(target)})")
    api_keys = ("base_url", "api_key_env", "api_version")
    target["kind"] = "api" if any(target.get(k) for k in api_keys) else "local"
    return target


def _labels(targets: list[dict[str, Any]]) -> list[str]:
    labels: list[str] = []
    for target in targets:
        base = target.get("label") or Path(str(target["model"]).rstrip("/")).name or str(target["model"])
        label, n = base, 2
        while label in labels:
            label, n = f"{base}-{n}", n + 1
        labels.append(label)
    return labels


def _run_folder(workspace: Workspace, names: list[str]) -> Path:
    digest = hashlib.sha256(json.dumps(names).encode()).hexdigest()[:8]
    return workspace.root / "evaluations" / f"{time.strftime('%Y%m%d-%H%M%S')}-{digest}"


def _flat(result: dict[str, Any]) -> dict[str, Any]:
    """Task metrics at the top level (result["bleu"]) next to the speed and memory figures."""
    return {**result.get("task_metrics", {}), **{k: v for k, v in result.items() if k != "task_metrics"}}


FIGURES = ("latency_mean_s", "latency_p50_s", "latency_p95_s", "ttft_mean_s", "ttft_p50_s", "ttft_p95_s",
           "throughput_answers_per_s", "throughput_output_tokens_per_s", "output_tokens_per_s", "peak_memory_mb",
           "model_memory_mb", "parameters", "size_on_disk_mb", "cost_per_1000_answers")


def wanted_keys(metrics: list[str] | None, task_type: str) -> set[str] | None:
    """The result keys `metrics` asks for; an unknown name is an error before any model is loaded."""
    if not metrics:
        return None
    task_metrics = get_task(task_type).metric_names
    wanted = set()
    for name in metrics:
        key = METRIC_ALIASES.get(name, name)
        if key not in task_metrics and key not in FIGURES:
            raise DistilflowError(f"metric {name!r} is not measured for task {task_type} (known: "
                                  f"{', '.join([*task_metrics, *METRIC_ALIASES, *FIGURES])})")
        wanted.add(key)
    return wanted


def _select(flat: dict[str, Any], wanted: set[str] | None) -> dict[str, Any]:
    if wanted is None:
        return flat
    selected = {k: v for k, v in flat.items() if k in wanted or k in _ALWAYS}
    selected["intervals"] = {k: v for k, v in (flat.get("intervals") or {}).items() if k in wanted}
    return selected


def _evaluate_all(workspace: Workspace, models: list[str | dict[str, Any]], test_data: str, task_type: str,
                  settings: Settings) -> tuple[Path, list[str], dict[str, dict[str, Any]]]:
    task = get_task(task_type)
    examples = read_examples(test_data, task, "test", limit=settings.max_examples)
    targets = [target_config(m) for m in models]
    labels = _labels(targets)
    folder = _run_folder(workspace, [str(t["model"]) for t in targets])
    payload = [{"id": x.id, "messages": x.messages, "reference": x.reference} for x in examples]
    results = {}
    for label, target in zip(labels, targets):
        config = {**target, "label": label, "task_type": task_type, "examples": payload,
                  "max_tokens": settings.max_tokens, "warmup": settings.warmup, "device": settings.device,
                  "batch_size": settings.batch_size, "throughput": settings.throughput,
                  "bootstrap_samples": settings.bootstrap_samples, "bootstrap_seed": settings.bootstrap_seed,
                  "output_dir": str(folder / label), **settings.extra}
        steps = len(payload) * (2 if settings.throughput else 1)
        with StageProgress(None, "", "evaluate", steps, f"evaluating {label}") as progress:
            results[label] = run_worker(config, lambda done, total: progress.update(done))
        results[label]["output_dir"] = str(folder / label)
    return folder, labels, results


def evaluate_model(workspace: Workspace, model: str | dict[str, Any], test_data: str, task_type: str, *,
                   metrics: list[str] | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Score one model; returns its figures (task metrics flat at the top level, filtered by `metrics`)."""
    wanted = wanted_keys(metrics, task_type)
    _, labels, results = _evaluate_all(workspace, [model], test_data, task_type, settings or Settings())
    return _select(_flat(results[labels[0]]), wanted)


def compare_models(workspace: Workspace, models: list[str | dict[str, Any]], test_data: str, task_type: str, *,
                   settings: Settings | None = None) -> dict[str, Any]:
    """Score several models on the same inputs; every model is compared with the first (quality kept,
    agreement with its answers, speed-up, memory saved). Writes report.json/md/html to the run folder."""
    from distilflow.io import iter_jsonl
    from distilflow.report.markdown import write_report_files
    from distilflow.report.data import assemble, relative
    from distilflow.tasks.scoring import agreement_with_teacher

    if len(models) < 2:
        raise DistilflowError("compare needs at least two models (the first is the one the others are compared with)")
    settings = settings or Settings()
    folder, labels, results = _evaluate_all(workspace, models, test_data, task_type, settings)
    task = get_task(task_type)
    predictions = {label: list(iter_jsonl(Path(results[label]["output_dir"]) / "predictions.jsonl"))
                   for label in labels}
    first = labels[0]
    for label in labels[1:]:
        results[label]["agreement_with_teacher"] = agreement_with_teacher(
            task, predictions[label], predictions[first], settings.bootstrap_samples, settings.bootstrap_seed)
    report = assemble(task, labels, results, predictions, examples_in_report=5)
    report.update({"title": f"Model comparison on {Path(test_data).name}", "agreement_reference": first,
                   "relative_to": first,
                   "relative": {label: relative(results[first], results[label], list(task.metric_names))
                                for label in labels[1:]}})
    paths = write_report_files(report, folder)
    return {**report, "report": str(paths["html"]), "output_dir": str(folder)}


def describe(result: dict[str, Any]) -> list[str]:
    """Readable lines of one model's figures, for the command line."""
    from distilflow.report.data import fmt

    lines = [f"model: {result.get('model')} ({result.get('kind', 'local')}, {result.get('device', 'n/a')})",
             f"examples: {result.get('examples')} ({result.get('scored_examples', 0)} with a reference)"]
    intervals = result.get("intervals") or {}
    for name, interval in intervals.items():
        marker = " (task score)" if name == result.get("primary_metric") else ""
        shown = DISPLAY_NAMES.get(name, name)
        lines.append(f"{shown}{marker}: {fmt(interval['value'])} [95% CI {fmt(interval['low'])}, "
                     f"{fmt(interval['high'])}], n={interval['n']}")
    if "latency_mean_s" in result:
        where = " over the network" if result.get("network") else ""
        lines.append(f"latency per answer{where}: mean {fmt(result.get('latency_mean_s'), 'ms')} ms, "
                     f"p50 {fmt(result.get('latency_p50_s'), 'ms')} ms, p95 {fmt(result.get('latency_p95_s'), 'ms')} ms"
                     f" (batch size 1)")
    if "ttft_mean_s" in result:
        lines.append(f"time to first token: mean {fmt(result.get('ttft_mean_s'), 'ms')} ms")
    if result.get("throughput_answers_per_s") is not None:
        lines.append(f"throughput: {fmt(result['throughput_answers_per_s'])} answers/s, "
                     f"{fmt(result.get('throughput_output_tokens_per_s'))} output tokens/s "
                     f"(batch size {result.get('throughput_batch_size')})")
    if "peak_memory_mb" in result:
        lines.append(f"peak memory: {fmt(result.get('peak_memory_mb'))} MB ({MEMORY_KINDS.get(result.get('peak_memory_kind'), result.get('peak_memory_kind'))})"
                     + (f"; model memory {fmt(result['model_memory_mb'])} MB" if result.get("model_memory_mb") else ""))
    if "parameters" in result:
        lines.append(f"parameters: {fmt(result.get('parameters'), 'int')}; size on disk: "
                     f"{fmt(result.get('size_on_disk_mb'))} MB")
    if result.get("cost_per_1000_answers") is not None:
        lines.append(f"cost per 1,000 answers: {fmt(result['cost_per_1000_answers'])}")
    if result.get("task_type") and "bleu" not in get_task(result["task_type"]).metric_names:
        lines.append(f"BLEU: n/a ({result['task_type']} references are labels or numbers, not text)")
    lines.append(f"results: {result.get('output_dir')}")
    return lines
