"""The Python API: submit a job that runs in a background process, poll it, stream it, cancel it."""

import os
import time

import pytest

from conftest import SRC, conversation_rows, write_jsonl
from distilflow import Client, DistillationJob
from distilflow.errors import DataError, SpecError
from distilflow.jobs.store import pid_alive


@pytest.fixture(autouse=True)
def _children_find_this_checkout(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(SRC))


def make_job(tmp_path, tiny_models, name, n_train=6, **extra) -> DistillationJob:
    write_jsonl(tmp_path / "train.jsonl", conversation_rows(n_train))
    write_jsonl(tmp_path / "test.jsonl", conversation_rows(2, offset=500))
    return DistillationJob(
        name=name, teacher_model=str(tiny_models["teacher"]), student_model=str(tiny_models["student"]),
        training_data=str(tmp_path / "train.jsonl"), test_data=str(tmp_path / "test.jsonl"),
        task_type="conversation",
        hyperparameters={"learning_rate": 1e-3, "batch_size": 2, "num_epochs": 1, "temperature": 0.7},
        generation=extra.pop("generation", {"max_tokens": 8}), evaluation={"max_tokens": 8, "warmup": 0}, **extra,
    )


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_create_or_update_returns_at_once_and_the_job_completes(tmp_path, tiny_models):
    client = Client(workspace=tmp_path / "ws")
    record = client.jobs.create_or_update(make_job(tmp_path, tiny_models, "api-job"))
    # At once: validated, then handed to a process of its own (the record is read before that one ends).
    assert record.status in ("queued", "running") and record.pid not in (None, os.getpid())
    seen = [r.status for r in client.jobs.stream("api-job", poll_seconds=0.5, timeout=300)]
    assert seen[-1] == "completed", client.jobs.get("api-job").error
    assert client.jobs.get("api-job").status == "completed"
    assert [j.name for j in client.jobs.list()] == ["api-job"]
    assert (tmp_path / "ws" / "jobs" / "api-job" / "report.md").exists()
    assert (tmp_path / "ws" / "jobs" / "api-job" / "logs" / "background.log").exists()


def test_bad_input_is_refused_before_anything_starts(tmp_path, tiny_models):
    client = Client(workspace=tmp_path / "ws")
    job = make_job(tmp_path, tiny_models, "bad")
    (tmp_path / "train.jsonl").write_text('{"messages": 3}\n')
    with pytest.raises(DataError, match="train.jsonl, line 1"):
        client.jobs.create_or_update(job)
    with pytest.raises(SpecError, match="did you mean 'generation.max_tokens'"):
        client.jobs.create_or_update({**make_job(tmp_path, tiny_models, "bad2").model_dump(),
                                      "generation": {"max_tokenz": 3}})
    assert client.jobs.list() == []


def test_cancel_stops_the_background_process(tmp_path, tiny_models):
    client = Client(workspace=tmp_path / "ws")
    job = make_job(tmp_path, tiny_models, "long", n_train=400, generation={"max_tokens": 64},
                   teacher={"batch_size": 1})
    client.jobs.create_or_update(job)
    deadline = time.monotonic() + 120
    while client.jobs.get("long").stage("generate").done < 3:
        assert time.monotonic() < deadline, "generation did not start"
        time.sleep(0.2)
    pid = client.jobs.get("long").pid
    assert pid_alive(pid)
    assert client.jobs.cancel("long").status == "canceled"
    deadline = time.monotonic() + 30
    while pid_alive(pid):
        assert time.monotonic() < deadline, "job process still alive after cancel"
        time.sleep(0.2)
    record = client.jobs.get("long")
    assert record.status == "canceled" and record.stage("generate").status == "canceled"
    assert not (tmp_path / "ws" / "jobs" / "long" / "synthetic" / "train.jsonl").exists()
