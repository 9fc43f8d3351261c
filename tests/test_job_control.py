"""A job nobody can corrupt: one process per job (a second run changes nothing), cancel that really stops, and
nothing paid for before the job is known to be runnable. The teacher is a real OpenAI-protocol server on
127.0.0.1 that counts every request."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
import yaml

from conftest import SRC, run_cli, start_cli, write_job
from distilflow import Client
from distilflow.jobs.store import JobStore, pid_alive
from openai_server import OpenAIServer, ServerConfig


@pytest.fixture(autouse=True)
def _children_find_this_checkout(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(SRC))


def api_job(folder: Path, models: dict[str, Path], server: OpenAIServer, name: str, **sections) -> Path:
    teacher = {"model": "teacher-model", "backend": "openai", "base_url": server.url, "max_concurrency": 1,
               **sections.pop("teacher", {})}
    return write_job(folder, models, name=name, teacher=teacher, **sections)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def live_processes_in_group(group: int) -> list[int]:
    """Pids of the processes (zombies excepted) in process group `group`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, _parent, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == group and state != "Z":
            found.append(int(entry.name))
    return found


def stored_job(workspace: Path, name: str) -> tuple:
    with sqlite3.connect(workspace / "distilflow.db") as db:
        return db.execute("SELECT spec, inputs_fingerprint FROM jobs WHERE name=?", (name,)).fetchone()


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_a_second_run_of_a_running_job_is_refused_and_changes_nothing(tmp_path, tiny_models):
    ws = tmp_path / "ws"
    with OpenAIServer(ServerConfig(latency=0.5)) as server:  # 30 answers, one at a time: 15 s of work
        spec = api_job(tmp_path / "job", tiny_models, server, "busy", n_train=30, n_val=0)
        first = start_cli("generate", str(spec), "--workspace", str(ws))
        wait_for(lambda: (ws / "distilflow.db").exists() and JobStore(ws / "distilflow.db").exists("busy")
                 and JobStore(ws / "distilflow.db").get("busy").stage("generate").done >= 2, 120, "did not start")
        saved_spec, saved_row = (ws / "jobs" / "busy" / "spec.yaml").read_text(), stored_job(ws, "busy")
        edited = yaml.safe_load(spec.read_text())
        edited["generation"]["temperature"] = 0.9
        spec.write_text(yaml.safe_dump(edited))
        second = run_cli("generate", str(spec), "--workspace", str(ws))
        assert second.returncode == 1 and "already running" in second.stderr, second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert (ws / "jobs" / "busy" / "spec.yaml").read_text() == saved_spec
        assert stored_job(ws, "busy") == saved_row
        first.wait(timeout=300)
        assert first.returncode == 0, first.stdout.read()
        asked = server.stats()["requests"]
        third = run_cli("generate", str(spec), "--workspace", str(ws))
        assert third.returncode == 0, third.stderr
        assert server.stats()["requests"] == asked + 30  # the edited temperature makes every request new
        assert "temperature: 0.9" in (ws / "jobs" / "busy" / "spec.yaml").read_text()


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_cancel_right_after_submit_stops_the_job_for_good(tmp_path, tiny_models):
    client = Client(workspace=tmp_path / "ws")
    with OpenAIServer(ServerConfig(latency=0.2)) as server:
        spec = api_job(tmp_path / "job", tiny_models, server, "early", n_train=30)
        record = client.jobs.create_or_update(spec_dict(spec))
        canceled = client.jobs.cancel("early")
        assert canceled.status == "canceled"
        assert not pid_alive(record.pid), "cancel returned while the job process was alive"
        # Nothing of the job is left to ask the teacher: the background job leads its own process group (its
        # workers included), and no live process remains in it.
        assert live_processes_in_group(record.pid) == [], "the canceled job left processes that may ask the teacher"
        assert client.jobs.get("early").status == "canceled"
        # A canceled job resumes with `run` (here: in this process).
        assert client.jobs.run(spec_dict(spec)).status == "completed"


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_jobs_cancel_returns_when_the_process_is_gone(tmp_path, tiny_models):
    ws = tmp_path / "ws"
    # One request at a time (max_concurrency 1): 60 answers of 50 ms keep the job busy while it is cancelled, and
    # the resumed run is quick.
    with OpenAIServer(ServerConfig(latency=0.05)) as server:
        spec = api_job(tmp_path / "job", tiny_models, server, "long", n_train=60)
        running = start_cli("run", str(spec), "--workspace", str(ws))
        wait_for(lambda: server.stats()["requests"] >= 2, 120, "the job did not start asking")
        pid = JobStore(ws / "distilflow.db").get("long").pid
        result = run_cli("jobs", "cancel", "long", "--workspace", str(ws))
        assert result.returncode == 0, result.stderr
        assert not pid_alive(pid) or running.poll() is not None
        running.wait(timeout=30)
        assert running.returncode == 130
        again = run_cli("run", str(spec), "--workspace", str(ws))  # resumes; nothing is asked twice
        assert again.returncode == 0, again.stderr
        # A request in flight when the job stopped may be asked again (at most max_concurrency = 1 of them); the
        # test inputs (200, 201) are asked again on purpose: evaluation times the teacher on them.
        answered = {p: n for p, n in server.stats()["answered"].items() if p not in ("Hello number 200, how are you?", "Hello number 201, how are you?")}
        assert sum(n > 1 for n in answered.values()) <= 1


def spec_dict(path: Path) -> dict:
    """A spec file as the Python API takes it (DistillationJob fields; paths resolved against the file)."""
    data = yaml.safe_load(path.read_text())
    for key in ("training_data", "validation_data", "test_data"):
        if key in data:
            data[key] = str((path.parent / data[key]).resolve())
    return {"name": data.pop("name"), "task_type": data.pop("task_type"), "teacher_model": data["teacher"].pop("model"),
            "student_model": data["student"].pop("model"), **data}


@pytest.mark.parametrize("change, message", [
    ({"student": {"model": "/nowhere/student"}}, "cannot load model"),
    ({"hyperparameters": {"learning_rate": float("inf")}}, "learning_rate"),
    ({"training": {"lr_scheduler": "cosine_annealing"}}, "lr_scheduler"),
    ({"training": {"device": "gpu0"}}, "training.device"),
    ({"student": {"prune": [0, 1, 7]}}, "layer 7 does not exist"),
])
@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_a_job_that_cannot_run_fails_before_any_teacher_request(tmp_path, tiny_models, change, message):
    with OpenAIServer(ServerConfig()) as server:
        spec = api_job(tmp_path / "job", tiny_models, server, "doomed", **change)
        result = run_cli("run", str(spec), "--workspace", str(tmp_path / "ws"))
        assert result.returncode == 1
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert server.stats()["requests"] == 0
        assert not (tmp_path / "ws" / "jobs" / "doomed" / "spec.yaml").exists()


def test_a_key_pasted_as_api_key_env_is_refused_and_not_echoed(tmp_path, tiny_models):
    key = "hf_" + "AbCdEfGh1234567890XyZ"
    with OpenAIServer(ServerConfig()) as server:
        spec = api_job(tmp_path / "job", tiny_models, server, "pasted", teacher={"api_key_env": key})
        result = run_cli("run", str(spec), "--workspace", str(tmp_path / "ws"))
    assert result.returncode == 1 and "api_key_env" in result.stderr
    assert key not in result.stdout + result.stderr
    assert not (tmp_path / "ws" / "jobs").exists() or key not in json.dumps(
        [p.read_bytes().decode("latin-1") for p in (tmp_path / "ws").rglob("*") if p.is_file()])
