"""Starting a job in the background: what `Client.jobs.create_or_update` does. It works through the job's lock
(jobs/lock.py): the child process inherits it, so one job never has two processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from distilflow.errors import DistilflowError
from distilflow.jobs.lock import LOCK_FD_ENV, JobLock
from distilflow.jobs.store import JobRecord
from distilflow.jobspec import JobSpec
from distilflow.pipeline.runner import already_running_message, record_job
from distilflow.pipeline.stages import preflight
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
