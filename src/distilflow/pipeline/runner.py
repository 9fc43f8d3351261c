"""The stage runner: prepare -> generate -> train -> evaluate -> report, with status, resume and cancel.

Resume is by construction: a completed stage is skipped unless its inputs changed, the teacher stage
skips every request already in its cache, and training restarts from its last checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

from distilflow.dist import is_main_process
from distilflow.errors import DistilflowError, JobCanceled, user_message
from distilflow.io import remove_stale_staging, write_text_atomic
from distilflow.jobs.context import StageContext
from distilflow.jobs.lock import JobLock
from distilflow.jobs.registry import register_outputs
from distilflow.jobs.store import STAGES, JobRecord, JobStore
from distilflow.pipeline.stages import PREREQUISITES, preflight, stage_fingerprints, stage_function, stages_from
from distilflow.prepare import PreparedInputs, prepare_inputs
from distilflow.jobspec import JobSpec, dump_spec
from distilflow.workspace import Workspace

log = logging.getLogger(__name__)

def record_job(spec: JobSpec, workspace: Workspace, inputs: PreparedInputs) -> JobStore:
    """Record the job and its resolved spec (the caller has checked the inputs and holds the job's lock)."""
    store = JobStore(workspace.db_path)
    paths = workspace.job(spec.name or "")
    reset = store.upsert_job(spec.name or "", spec.task_type, spec.public_dict(),
                             stage_fingerprints(spec, inputs.data_hashes))
    if reset:
        log.info("inputs changed; re-running from stage %s", reset[0])
    paths.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(paths.spec, dump_spec(spec))
    return store


def run_job(spec: JobSpec, workspace: Workspace, stages: list[str] | None = None, *,
            rerun: bool = True) -> JobRecord | None:
    """Run the job's stages. `stages=None` runs every unfinished stage; naming stages re-runs them (with
    `rerun=False`, only those not completed yet: what `distilflow tune` asks of the teacher stage).

    Everything that can be checked without the teacher is checked first; then the job's lock is taken, and only
    then is anything about the job written: a second run of a running job changes nothing."""
    assert spec.name
    wanted = list(STAGES[1:]) if stages is None else stages
    if not is_main_process():
        # Extra ranks of a distributed launch only take part in training (the main rank holds the lock).
        inputs = prepare_inputs(spec)
        context = StageContext(spec, workspace, workspace.job(spec.name), None, inputs,
                               stage_fingerprints(spec, inputs.data_hashes))
        if "train" in wanted:
            stage_function("train")(context)
        return None
    inputs = preflight(spec, stages)
    paths = workspace.job(spec.name)
    launched = JobLock.inherited(paths.lock)  # started by Client.jobs.create_or_update, which holds the lock for us
    lock = launched or JobLock(paths.lock)
    if not lock.acquire():
        raise DistilflowError(already_running_message(workspace, spec.name))
    try:
        store = record_job(spec, workspace, inputs)
        if launched is not None and store.raw_status(spec.name) == "canceled":
            raise JobCanceled(f"job {spec.name!r} was canceled before it started")
        for folder in (paths.root, paths.student, paths.synthetic, paths.eval):
            remove_stale_staging(folder)  # left by a process killed mid-write; safe: we hold the job's lock
        context = StageContext(spec, workspace, paths, store, inputs, stage_fingerprints(spec, inputs.data_hashes))
        _run_stages(context, wanted, explicit=stages is not None and rerun)
    finally:
        lock.release()
    return store.get(spec.name)  # read once the lock is free: the status is the job's, not "running"


def already_running_message(workspace: Workspace, name: str) -> str:
    store = JobStore(workspace.db_path)
    pid = store.get(name).pid if store.exists(name) else None
    where = f" (process {pid})" if pid else ""
    return (f"job {name!r} is already running{where}; nothing was changed: wait for it to end or run "
            f"`distilflow jobs cancel {name}`")


def _run_stages(context: StageContext, wanted: list[str], explicit: bool) -> JobRecord:
    spec, store = context.spec, context.store
    assert spec.name and store is not None
    store.claim(spec.name, os.getpid())
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGTERM, _raise_canceled) if in_main_thread else None
    current = "prepare"
    try:
        store.start_stage(spec.name, "prepare")
        store.finish_stage(spec.name, "prepare", "completed", metrics=context.inputs.summary())
        for stage in wanted:
            record = store.get(spec.name)
            if record.stage(stage).status == "completed" and not explicit:
                continue
            needed = PREREQUISITES.get(stage)
            if needed and record.stage(needed).status != "completed" and needed not in wanted:
                raise DistilflowError(
                    f"stage {stage!r} needs stage {needed!r} first; run `distilflow {needed} ...` or `distilflow run ...`")
            current = stage
            _run_one_stage(context, stage, explicit)
        done = all(s.status == "completed" for s in store.get(spec.name).stages)
        if done:  # registered first: whoever sees "completed" finds the job's models
            register_outputs(store, spec, context.paths)
        store.set_job_status(spec.name, "completed" if done else "queued")
    except (JobCanceled, KeyboardInterrupt):
        store.finish_stage(spec.name, current, "canceled")
        store.set_job_status(spec.name, "canceled", error="canceled by the user")
        raise JobCanceled(f"job {spec.name!r} was canceled during stage {current}") from None
    except Exception as error:
        message = user_message(error) or f"internal error in stage {current}: {error.__class__.__name__}: {error}"
        store.finish_stage(spec.name, current, "failed", error=message)
        store.set_job_status(spec.name, "failed", error=message)
        raise
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    return store.get(spec.name)


def _run_one_stage(context: StageContext, stage: str, explicit: bool) -> None:
    spec, store = context.spec, context.store
    assert spec.name and store is not None
    store.start_stage(spec.name, stage)
    log.info("stage %s: started", stage)
    metrics = stage_function(stage)(context)
    context.results[stage] = metrics
    store.finish_stage(spec.name, stage, "completed", metrics=metrics)
    if explicit:  # a re-run stage makes the outputs of later stages stale
        store.reset_stages(spec.name, stages_from(stage)[1:])


def _raise_canceled(signum: int, frame: Any) -> None:
    raise JobCanceled("canceled")
