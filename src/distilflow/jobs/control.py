"""Starting a job in the background and canceling a job: what `Client.jobs.create_or_update` / `cancel` and
`distilflow jobs cancel` do. Both work through the job's lock (lock.py), so one job never has two processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from distilflow.errors import DistilflowError
from distilflow.jobs.lock import LOCK_FD_ENV, JobLock
from distilflow.jobs.processes import same_process, stop_job
from distilflow.jobs.runner import already_running_message, preflight, record_job
from distilflow.jobs.store import TERMINAL_STATUSES, JobRecord, JobStore
from distilflow.spec import JobSpec
from distilflow.workspace import Workspace


def launch_job(spec: JobSpec, workspace: Workspace) -> JobRecord:
    """Check the job, take its lock, record it, and start `distilflow run` in a new session that inherits the lock
    (it keeps running after the caller exits). A running job is refused and nothing is changed."""
    assert spec.name
    inputs = preflight(spec)
    paths = workspace.job(spec.name)
    lock = JobLock(paths.lock)
    if not lock.acquire():
        raise DistilflowError(already_running_message(workspace, spec.name))
    try:
        store = record_job(spec, workspace, inputs)
        store.set_job_status(spec.name, "queued")
        assert lock.fd is not None
        pid = _spawn(paths.spec, workspace, paths.background_log, lock.fd)
        store.set_process(spec.name, pid)  # before the lock is let go: a cancel from now on can reach it
    finally:
        lock.release()  # the child holds the same lock through its inherited descriptor
    return store.get(spec.name)


def _spawn(spec_path: Path, workspace: Workspace, log_path: Path, lock_fd: int) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env[LOCK_FD_ENV] = str(lock_fd)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "distilflow", "run", str(spec_path), "--workspace", str(workspace.root)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
            pass_fds=(lock_fd,),
        )
    return process.pid


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
