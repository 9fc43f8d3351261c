"""The compare page (several jobs side by side: quality with its interval, speed-up, memory, method, layers kept; the
jobs on one plot, so the points of a depth or method sweep read as a frontier; each job's tune trials) and the
models page (registered models with their job, report and the commands that ship them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distilflow.io import read_json
from distilflow.jobs.store import JobRecord, RegisteredModel
from distilflow.report.tables import fmt
from distilflow.results import ModelResult
from distilflow.ui.charts import Chart, line_chart, scatter_chart
from distilflow.ui.files import TuningView, tuning_view
from distilflow.workspace import Workspace


@dataclass(frozen=True)
class Compared:
    """One job's column."""

    name: str
    task_type: str
    status: str
    primary_metric: str
    cells: list[tuple[str, str]]
    speedup: float | None
    score: float | None
    low: float | None
    high: float | None
    tuning: TuningView | None
    tuning_chart: Chart | None


def _layers(spec: dict[str, Any], workspace: Workspace, name: str) -> str:
    """The distilled student's layer count, and which layers pruning kept."""
    config = read_json(workspace.job(name).student_final / "config.json", default={}) or {}
    layers = config.get("num_hidden_layers")
    prune = (spec.get("student") or {}).get("prune")
    kept = "" if prune is None else f" (kept {prune})" if isinstance(prune, list) else \
        f" (every {prune.get('every')}th)" if isinstance(prune, dict) else ""
    return f"{layers if layers is not None else 'n/a'}{kept}"


def compared(record: JobRecord, workspace: Workspace) -> Compared:
    report = read_json(workspace.job(record.name).report_json, default={}) or {}
    primary = report.get("primary_metric") or "score"
    models = report.get("models") or {}
    distilled = ModelResult.of(models["distilled"]) if "distilled" in models else None
    teacher = ModelResult.of(models["teacher"]) if "teacher" in models else None
    comparison = report.get("comparison") or {}
    interval = distilled.interval(primary) if distilled else None
    score = distilled.score(primary) if distilled else None
    training = (record.spec.get("training") or {})
    cells = [
        ("status", str(record.status)), ("task", record.task_type),
        (f"distilled {primary} [95% CI]", _with_interval(score, interval)),
        (f"teacher {primary}", fmt(teacher.score(primary)) if teacher else "n/a"),
        ("retention", fmt(comparison.get("retention"), "pct")),
        ("speed-up", fmt(comparison.get("speedup"), "x")),
        ("peak memory (MB)", fmt(distilled.peak_memory_mb) if distilled else "n/a"),
        ("memory reduction", fmt(comparison.get("memory_reduction"), "pct")),
        ("parameters", fmt(distilled.parameters, "int") if distilled else "n/a"),
        ("method", str(training.get("method", "sft"))),
        ("layers", _layers(record.spec, workspace, record.name)),
        ("student", str((record.spec.get("student") or {}).get("model", ""))),
    ]
    tuning = tuning_view(workspace.job(record.name))
    trials = line_chart({"validation score": [[n, v] for n, v in tuning.scores]}, "trial", "validation score") \
        if tuning and tuning.scores else None
    return Compared(name=record.name, task_type=record.task_type, status=str(record.status), primary_metric=primary,
                    cells=cells, speedup=comparison.get("speedup"), score=score,
                    low=interval.low if interval else None, high=interval.high if interval else None,
                    tuning=tuning, tuning_chart=trials)


def _with_interval(score: float | None, interval: Any) -> str:
    if score is None:
        return "n/a"
    if interval is None or interval.low is None:
        return fmt(score)
    return f"{fmt(score)} [{fmt(interval.low)}, {fmt(interval.high)}]"


def frontier(columns: list[Compared]) -> Chart:
    """Every compared job as a point: its speed-up over the teacher against its distilled score (with interval)."""
    primary = {c.primary_metric for c in columns}
    y_label = f"distilled {primary.pop()}" if len(primary) == 1 else "distilled score (primary metric)"
    return scatter_chart([(c.name, c.speedup, c.score, c.low, c.high) for c in columns], "speed-up over the teacher",
                         y_label)


@dataclass(frozen=True)
class ModelView:
    model: RegisteredModel
    commands: list[str]


def model_views(models: list[RegisteredModel]) -> list[ModelView]:
    """Each registered model with the commands that evaluate, export or serve it (export ships a job's distilled
    student, so a baseline gets evaluate and serve only)."""
    views = []
    for m in models:
        commands = [f"distilflow evaluate-model {m.name} --test-data TEST.jsonl", f"distilflow serve {m.name}"]
        if m.label == "distilled":
            commands += [f"distilflow export {m.job} --format hf", f"distilflow export {m.job} --format gguf "
                         "--quantize q8_0", f"distilflow export {m.job} --format ollama"]
        views.append(ModelView(m, commands))
    return views
