"""One line per job, as the jobs page shows it and as its live updates carry it: status, current stage, progress,
ETA and the stage's live note. Every value is formatted here, once: the page's script only copies text."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from distilflow.jobs.store import STAGES, TERMINAL_STATUSES, JobRecord, StageRecord


def clock(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else "-"


def span(seconds: float | None) -> str:
    """12 s, 4 min 05 s, 2 h 10 min."""
    if seconds is None or seconds < 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def stage_seconds(stage: StageRecord, now: float) -> float | None:
    """How long the stage ran (so far, while it runs)."""
    if stage.started_at is None:
        return None
    end = stage.finished_at if stage.finished_at and stage.status != "running" else now
    return max(0.0, end - stage.started_at)


def eta_seconds(stage: StageRecord, now: float) -> float | None:
    """Time left at the stage's average rate since it started; None until there is a rate to go by."""
    if stage.status != "running" or not stage.total or not stage.done or stage.started_at is None:
        return None
    elapsed = now - stage.started_at
    if elapsed <= 0 or stage.done >= stage.total:
        return None
    return (stage.total - stage.done) * elapsed / stage.done


def progress_text(stage: StageRecord | None) -> str:
    if stage is None or (not stage.total and not stage.done):
        return "-"
    return f"{stage.done:,}/{stage.total:,}" if stage.total else f"{stage.done:,}"


def percent(stage: StageRecord | None) -> float | None:
    """How far the stage is; None while it runs without a known total (the bar then says "busy")."""
    if stage is None or stage.status == "pending":
        return 0.0
    if stage.status == "completed":
        return 100.0
    if not stage.total:
        return None if stage.status == "running" else 0.0
    return round(min(100.0, 100.0 * stage.done / stage.total), 1)


@dataclass(frozen=True)
class JobRow:
    name: str
    task_type: str
    status: str
    stage: str
    stage_number: str  # "3/5"
    progress: str
    percent: float | None
    eta: str
    note: str
    updated: str
    terminal: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def job_row(record: JobRecord, now: float | None = None) -> JobRow:
    now = time.time() if now is None else now
    stage = record.current_stage
    terminal = record.status in TERMINAL_STATUSES
    number = f"{STAGES.index(stage.stage) + 1}/{len(STAGES)}" if stage is not None and stage.stage in STAGES else ""
    if stage is not None and stage.status == "running":
        note = stage.message or ""
    elif record.status == "failed":
        note = record.error or next((s.error for s in record.stages if s.error), None) or \
            "the job process stopped unexpectedly (killed?); resume it to go on"
    else:
        note = ""
    return JobRow(
        name=record.name, task_type=record.task_type, status=str(record.status),
        stage=stage.stage if stage is not None else "all done", stage_number=number,
        progress=progress_text(stage),
        percent=percent(stage) if stage is not None else 100.0,
        eta=span(eta_seconds(stage, now)) if stage is not None and not terminal else "-",
        note=note, updated=clock(record.updated_at), terminal=terminal)
