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
from distilflow.jobspec import JobSpec
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


def newest_job_registering(store: JobStore, name: str) -> JobRecord | None:
    """The newest job (any status) whose outputs carry `name`: the one that decides what the name is."""
    for record in reversed(store.list()):
        if name in output_model_names(JobSpec.model_validate(record.spec)).values():
            return record
    return None


def find_model(store: JobStore, name: str) -> RegisteredModel | None:
    """The registered model `name` (None if no job registers it). The newest job that registers it decides: one
    still running is waited for, so that a script that evaluates "phi-4-mini-distilled" right after submitting the
    job gets that job's model, not an older one; one that ended without completing (and registered nothing since)
    is an error that says why, rather than an older model evaluated in its place."""
    job = newest_job_registering(store, name)
    if job is not None and job.status not in TERMINAL_STATUSES:
        log.warning("%s: waiting for job %r, which registers it, to finish (status %s)", name, job.name, job.status)
        while job.status not in TERMINAL_STATUSES:
            time.sleep(POLL_SECONDS)
            job = store.get(job.name)
    model = registered(store, name)
    if job is not None and job.status != "completed" and (model is None or model.registered_at < job.updated_at):
        raise DistilflowError(f"model {name!r} was not registered: job {job.name!r} {job.status}"
                              + (f" ({job.error})" if job.error else "") + "; `distilflow run` resumes it")
    return model
