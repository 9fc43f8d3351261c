"""A job's page: its stages with durations and their figures, the teacher stage's rate and cost, the training loss
curve, and what its folder holds (files.py). `live_job` is the part that changes while the job runs: what the
page's live updates carry."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from distilflow.jobs.store import JobRecord, RegisteredModel, StageRecord
from distilflow.report.data import loss_curve
from distilflow.report.tables import fmt
from distilflow.ui.charts import Chart, line_chart
from distilflow.ui.files import (Page, ReportView, TuningView, DataRow, rejected_page, report_view, spec_text,
                                 synthetic_sample, tuning_view)
from distilflow.ui.overview import JobRow, clock, job_row, percent, progress_text, span, stage_seconds
from distilflow.workspace import JobPaths

Figures = list[tuple[str, str]]


def _prepare(m: dict[str, Any]) -> Figures:
    rows = m.get("rows") or {}
    out = [("rows", ", ".join(f"{split} {n:,}" for split, n in rows.items()))] if rows else []
    overlap = (m.get("data") or {}).get("overlap") or {}
    if overlap.get("training_rows"):  # training rows that repeat held-out rows, and what data.overlap did
        done = {"drop": "dropped from training", "warn": "kept (data.overlap: warn)"}.get(overlap["action"], "")
        out.append(("overlapping training rows", f"{overlap['training_rows']:,} {done}".strip()))
    return out


def _generate(m: dict[str, Any]) -> Figures:
    run = m.get("this_run") or {}
    accepted = m.get("accepted") or {}
    out = [("requests", fmt(m.get("requests"), "int")),
           ("answers/s (this run)", fmt(run.get("answers_per_s"))),
           ("tokens in / out", f"{fmt(m.get('prompt_tokens'), 'int')} / {fmt(m.get('completion_tokens'), 'int')}"),
           ("cost", f"${m['cost_usd']:,.4f}" if m.get("cost_usd") is not None else "no prices in the spec"),
           ("accepted", ", ".join(f"{split} {n:,}" for split, n in accepted.items()) or "-"),
           ("rejected", fmt(m.get("rejected"), "int") + "".join(
               f"; {reason} {n}" for reason, n in (m.get("rejected_by_reason") or {}).items()))]
    if m.get("failed"):
        out.append(("failed for good", fmt(m["failed"], "int")))
    return out


def _train(m: dict[str, Any]) -> Figures:
    return [(name, fmt(m.get(key))) for name, key in (("method", "method"), ("steps", "steps"),
            ("train loss", "train_loss"), ("validation loss", "validation_loss"), ("rows", "train_rows"))
            if m.get(key) is not None]


def _evaluate(m: dict[str, Any]) -> Figures:
    out = []
    for label, result in m.items():
        if isinstance(result, dict) and result.get("task_metrics"):
            scores = ", ".join(f"{k} {fmt(v)}" for k, v in result["task_metrics"].items())
            out.append((label, f"{scores}; latency {fmt(result.get('latency_mean_s'), 'ms')} ms"))
    return out


def _report(m: dict[str, Any]) -> Figures:
    return [(f"retention ({m.get('primary_metric', 'primary metric')})", fmt(m.get("retention"), "pct")),
            ("speed-up", fmt(m.get("speedup"), "x"))] if "retention" in m else []


# stage -> the figures its metrics show (jobs/store.py's STAGES lists the stages; a new one shows none until added)
STAGE_FIGURES: dict[str, Callable[[dict[str, Any]], Figures]] = {
    "prepare": _prepare, "generate": _generate, "train": _train, "evaluate": _evaluate, "report": _report}


@dataclass(frozen=True)
class StageView:
    stage: str
    status: str
    progress: str
    percent: float | None
    started: str
    duration: str
    note: str
    figures: Figures


def stage_view(stage: StageRecord, now: float) -> StageView:
    figures = STAGE_FIGURES.get(stage.stage, lambda m: [])(stage.metrics) if stage.status == "completed" else []
    return StageView(stage=stage.stage, status=stage.status, progress=progress_text(stage), percent=percent(stage),
                     started=clock(stage.started_at), duration=span(stage_seconds(stage, now)),
                     note=stage.error or (stage.message if stage.status == "running" else "") or "", figures=figures)


def loss_chart(paths: JobPaths) -> Chart:
    return line_chart(loss_curve(paths.train_log), "optimizer step", "loss")


def live_job(record: JobRecord, paths: JobPaths, now: float | None = None) -> dict[str, Any]:
    """What changes on a job's page while it runs (sent to it as one server-sent event)."""
    now = time.time() if now is None else now
    return {"job": job_row(record, now).to_json(), "stages": [asdict(stage_view(s, now)) for s in record.stages],
            "loss": loss_chart(paths).to_json()}


@dataclass
class JobPage:
    record: JobRecord
    row: JobRow
    stages: list[StageView]
    loss: Chart
    rejected: Page
    sample: list[DataRow]
    report: ReportView | None
    tuning: TuningView | None
    spec: str
    models: list[RegisteredModel] = field(default_factory=list)

    @property
    def can_cancel(self) -> bool:
        return self.record.status in ("queued", "running")

    @property
    def can_resume(self) -> bool:
        """A job that stopped before the end (a queued one is not running: it never started, or it was stopped)."""
        return self.record.status in ("queued", "failed", "canceled")


def job_page(record: JobRecord, paths: JobPaths, rejected_number: int = 1) -> JobPage:
    now = time.time()
    return JobPage(record=record, row=job_row(record, now), stages=[stage_view(s, now) for s in record.stages],
                   loss=loss_chart(paths), rejected=rejected_page(paths, rejected_number),
                   sample=synthetic_sample(paths), report=report_view(paths), tuning=tuning_view(paths),
                   spec=spec_text(record.spec), models=record.models)
