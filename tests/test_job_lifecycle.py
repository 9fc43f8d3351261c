"""A job from start to end as a user runs it (real CLI processes, tiny local models): without a test set it still
completes and its report says what was not measured; a `kill -9` during evaluation leaves no worker behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cli_env, run_cli, start_cli, write_job
from distilflow.jobs.store import JobStore

NAME = "no-test-set"


@pytest.fixture(scope="module")
def trained_job(tmp_path_factory, tiny_models) -> tuple[Path, subprocess.CompletedProcess]:
    """`distilflow run` of a job whose spec has no test_data (generate, train, evaluate, report)."""
    folder = tmp_path_factory.mktemp("lifecycle")
    spec = write_job(folder / "job", tiny_models, name=NAME, n_train=4, n_val=0, test_data=None)
    return folder / "ws", run_cli("run", str(spec), "--workspace", str(folder / "ws"))


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_a_job_without_test_data_completes_and_says_what_was_not_measured(trained_job):
    workspace, result = trained_job
    assert result.returncode == 0, result.stderr[-3000:]
    shown = json.loads(run_cli("jobs", "show", NAME, "--json", "-w", str(workspace)).stdout)
    assert shown["status"] == "completed"
    assert all(stage["status"] == "completed" for stage in shown["stages"])
    job = workspace / "jobs" / NAME
    assert (job / "student" / "final" / "model.safetensors").exists()
    markdown = (job / "report.md").read_text()
    assert "Quality, speed and memory were not measured: this job has no test set (test_data)" in markdown
    assert "## Teacher data" in markdown and "- Requests: 4, failed: 0" in markdown
    assert "## Training" in markdown and "- Method: sft, steps: 2" in markdown
    assert "## Quality\n" not in markdown and "Speed-up" not in markdown  # no table of n/a pretending to be results
    page = (job / "report.html").read_text()
    assert 'id="not-measured">Quality, speed and memory were not measured' in page and "<h2>Training</h2>" in page
    report = json.loads((job / "report.json").read_text())
    assert report["training"]["steps"] == 2 and report["teacher_stage"]["requests"] == 4
    assert all(not m["evaluated"] and "no test set" in m["reason"] for m in report["models"].values())


def _children(pid: int, marker: str) -> list[int]:
    """Processes whose parent is `pid` and whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid and marker in command:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_until_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_during_evaluation_leaves_no_worker_alive(trained_job, tiny_models, tmp_path):
    workspace, result = trained_job
    assert result.returncode == 0, result.stderr[-3000:]
    copy = tmp_path / "ws"
    shutil.copytree(workspace, copy)
    # The same job, now with a test set: only evaluate and report run (plenty of rows: it would take a while).
    spec = write_job(tmp_path / "job", tiny_models, name=NAME, n_train=4, n_val=0, n_test=400,
                     evaluation={"models": ["distilled"], "max_tokens": 64, "warmup": 0, "throughput": False})
    job = start_cli("run", str(spec), "--workspace", str(copy))
    try:
        deadline, workers = time.monotonic() + 120, []
        while not workers:
            assert job.poll() is None and time.monotonic() < deadline, "no evaluation worker started"
            workers = _children(job.pid, "distilflow.evaluate.worker")
            time.sleep(0.05)
        store = JobStore(copy / "distilflow.db")
        while store.get(NAME).stage("evaluate").done < 1:  # into its work: answers are coming
            assert job.poll() is None and time.monotonic() < deadline, "the evaluation worker answered nothing"
            time.sleep(0.05)
        os.kill(job.pid, signal.SIGKILL)
        job.wait(10)
        assert _wait_until_gone(workers[0], 15), "the evaluation worker outlived its job by 15 s"
    finally:
        if job.poll() is None:
            job.kill()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_is_killed_by_the_kernel_when_its_parent_dies(tmp_path):
    """The mechanism alone: a worker that prints nothing (a broken pipe would not end it) dies with its parent."""
    child = ("import os, sys, time; from distilflow.evaluate.worker import die_with_parent; die_with_parent(); "
             "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)")
    parent = ("import os, subprocess, sys; env = dict(os.environ, DISTILFLOW_WORKER_PARENT=str(os.getpid())); "
              f"subprocess.Popen([sys.executable, '-c', {child!r}, sys.argv[1]], env=env); import time; time.sleep(120)")
    pid_file = tmp_path / "worker.pid"
    process = subprocess.Popen([sys.executable, "-c", parent, str(pid_file)], env=cli_env())
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        worker = int(pid_file.read_text())
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        assert _wait_until_gone(worker, 5), "the worker outlived its parent"
    finally:
        if process.poll() is None:
            process.kill()
