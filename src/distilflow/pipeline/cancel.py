"""Canceling a job: what `Client.jobs.cancel` and `distilflow jobs cancel` do. The store's status is the message
(a job launched but not started yet reads it and never starts); signals hurry a running one."""

from __future__ import annotations

from distilflow.errors import DistilflowError
from distilflow.jobs.processes import same_process, stop_job
from distilflow.jobs.store import TERMINAL_STATUSES, JobRecord, JobStore
from distilflow.workspace import Workspace


def cancel_job(workspace: Workspace, name: str) -> JobRecord:
    """Stop the job and return once its processes (the run and its workers) have exited: SIGTERM, then SIGKILL
    after a grace period. A job that has not started yet never starts. `distilflow run` resumes it later."""
    store = JobStore(workspace.db_path)
    record = store.get(name)
    if record.status in TERMINAL_STATUSES and not store.is_running(name):
        return record
    # The status is the message (a job launched but not yet started reads it and stops); signals hurry it up.
    store.set_job_status(name, "canceled", error="canceled by the user")
    def stopped() -> bool:  # the lock is free and the process is gone (it lets go of the lock just before exit)
        return not store.is_running(name) and not same_process(record.pid, record.pid_start)

    if not stop_job(record.pid, record.pid_start, stopped):
        raise DistilflowError(f"job {name!r} did not stop after SIGKILL (process {record.pid}); check it with ps")
    return store.get(name)  # canceled; or completed/failed if it ended before the signal arrived
