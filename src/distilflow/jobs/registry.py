"""Registered models: a completed job registers its outputs under the names a script written for a cloud
distillation API asks for: `<student>-distilled` (or the job's `output_model_name`) and `<student>-baseline` (the
student before training, pruned if it was). `<student>` is the student's catalog name (distilflow.yaml), else its
folder or file name. `models.evaluate(model_name=...)` finds them here; `models.list()` lists them.

The registrations live in the workspace's SQLite (the `models` table of jobs/store.py); a name registered again
names the newer job's model (the latest run wins, as a new version would on a cloud registry)."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from distilflow.errors import DistilflowError
from distilflow.jobs.store import TERMINAL_STATUSES, JobRecord, JobStore, RegisteredModel
from distilflow.spec import JobSpec
from distilflow.workspace import JobPaths

log = logging.getLogger(__name__)

DISTILLED, BASELINE = "distilled", "baseline"
POLL_SECONDS = 1.0


def student_name(spec: JobSpec) -> str:
    """The student's short name: its catalog name, else its folder or file name (a hub id's last part)."""
    if spec.student.name:
        return spec.student.name
    base = Path(spec.student.model.rstrip("/")).name.removesuffix(".gguf") or "student"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._")[:80] or "student"


def output_model_names(spec: JobSpec) -> dict[str, str]:
    """label -> the name a job registers that model under when it completes."""
    short = student_name(spec)
    return {DISTILLED: spec.output_model_name or f"{short}-distilled", BASELINE: f"{short}-baseline"}


def register_outputs(store: JobStore, spec: JobSpec, paths: JobPaths) -> list[RegisteredModel]:
    """Register a completed job's distilled and baseline students (called before the job is marked completed, so
    whoever sees "completed" finds them)."""
    assert spec.name
    names = output_model_names(spec)
    where = {DISTILLED: str(paths.student_final), BASELINE: paths.baseline_student(spec)}
    report = str(paths.report_md) if paths.report_md.exists() else None
    now = time.time()
    models = [RegisteredModel(name=names[label], job=spec.name, label=label, path=where[label],
                              task_type=spec.task_type, report=report, registered_at=now) for label in (DISTILLED, BASELINE)]
    store.register_models(models)
    return models


def registered(store: JobStore, name: str) -> RegisteredModel | None:
    return next((m for m in store.registered_models() if m.name == name), None)


def job_that_will_register(store: JobStore, name: str) -> JobRecord | None:
    """A queued or running job that registers `name` when it completes (the newest, as it will win)."""
    for record in reversed(store.list()):
        if record.status not in TERMINAL_STATUSES:
            spec = JobSpec.model_validate(record.spec)
            if name in output_model_names(spec).values():
                return record
    return None


def find_model(store: JobStore, name: str) -> RegisteredModel | None:
    """The registered model `name` (None if there is none). A job still running that registers it is waited for first, so that a script
    that evaluates "phi-4-mini-distilled" right after submitting the job gets that job's model, not an older one
    (or an error). A job that ends without completing is an error that says why."""
    pending = job_that_will_register(store, name)
    if pending is not None:
        log.warning("%s: waiting for job %r, which registers it, to finish (status %s)", name, pending.name,
                    pending.status)
        record = pending
        while record.status not in TERMINAL_STATUSES:
            time.sleep(POLL_SECONDS)
            record = store.get(pending.name)
        if record.status != "completed":
            raise DistilflowError(f"model {name!r} was not registered: job {record.name!r} {record.status}"
                                  + (f" ({record.error})" if record.error else ""))
    return registered(store, name)
