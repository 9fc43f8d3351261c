"""A job killed with SIGKILL at any moment resumes when run again: finished work is not redone."""

import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from conftest import run_cli, start_cli, write_job
from tiny_models import build_model


def cached_answers(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def wait_for(condition, process, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            raise AssertionError(f"job ended before the kill point:\n{process.stdout.read()}")
        time.sleep(0.01)
    raise AssertionError("kill point not reached in time")


@pytest.mark.slow  # ~45 s; test_generate_api covers kill -9 in the teacher stage by default
def test_kill_during_generate_then_resume_answers_each_input_once(tmp_path, tiny_models):
    n_train = 80
    spec = write_job(tmp_path / "spec", tiny_models, name="killgen", n_train=n_train,
                     teacher={"model": str(tiny_models["teacher"]), "backend": "hf", "batch_size": 1},
                     generation={"max_tokens": 16}, evaluation={"max_tokens": 4, "warmup": 0})
    ws = tmp_path / "ws"
    db = ws / "jobs" / "killgen" / "cache" / "teacher.sqlite"
    process = start_cli("run", str(spec), "--workspace", str(ws))
    wait_for(lambda: cached_answers(db) >= 10, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    answered_before = cached_answers(db)
    assert 10 <= answered_before < n_train + 2, "the kill must land mid-generate"
    assert not (ws / "jobs" / "killgen" / "synthetic" / "train.jsonl").exists()

    show = run_cli("jobs", "show", "killgen", "--workspace", str(ws))
    assert "failed" in show.stdout and "run the same command again to resume" in show.stdout

    result = run_cli("run", str(spec), "--workspace", str(ws))
    assert result.returncode == 0, result.stderr
    record = json.loads(run_cli("jobs", "show", "killgen", "--workspace", str(ws), "--json").stdout)
    generate = next(s for s in record["stages"] if s["stage"] == "generate")["metrics"]
    assert generate["cached_before"] == answered_before  # nothing answered before the kill was asked again
    assert generate["requests"] == n_train + 2
    rows = [json.loads(line) for line in (ws / "jobs" / "killgen" / "synthetic" / "train.jsonl").open()]
    assert sorted(r["id"] for r in rows) == sorted(f"train-{i}" for i in range(1, n_train + 1))
    assert record["status"] == "completed"


@pytest.mark.slow  # test_train_resume covers kill -9 in training by default; this one runs in CI
def test_kill_during_train_resumes_from_last_checkpoint(tmp_path, tiny_models):
    from transformers import AutoTokenizer

    # A student big enough that training takes a few seconds, so the kill lands mid-way.
    student = build_model(tmp_path / "bigger-student", AutoTokenizer.from_pretrained(tiny_models["student"]),
                          layers=4, hidden=128, seed=3)
    models = {**tiny_models, "student": student}
    spec = write_job(tmp_path / "spec", models, name="killtrain", n_train=16,
                     training={"max_steps": 60, "save_steps": 5, "logging_steps": 1},
                     evaluation={"max_tokens": 4, "warmup": 0})
    ws = tmp_path / "ws"
    checkpoints = ws / "jobs" / "killtrain" / "student" / "checkpoints"
    process = start_cli("run", str(spec), "--workspace", str(ws))
    wait_for(lambda: (checkpoints / "checkpoint-10" / "trainer_state.json").exists(), process, timeout=300)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = time.time()
    assert not (ws / "jobs" / "killtrain" / "student" / "final").exists()

    result = run_cli("run", str(spec), "--workspace", str(ws))
    assert result.returncode == 0, result.stderr
    record = json.loads(run_cli("jobs", "show", "killtrain", "--workspace", str(ws), "--json").stdout)
    stages = {s["stage"]: s for s in record["stages"]}
    assert stages["generate"]["finished_at"] < killed_at  # the finished teacher stage was not redone
    train = stages["train"]["metrics"]
    assert train["resumed_from"] and "checkpoint-" in train["resumed_from"]
    assert train["steps"] == 60
    assert (ws / "jobs" / "killtrain" / "student" / "final" / "model.safetensors").exists()
    log = json.loads((ws / "jobs" / "killtrain" / "student" / "train_log.json").read_text())
    steps = [entry["step"] for entry in log if "loss" in entry]
    assert steps == sorted(set(steps)) and steps[-1] == 60  # no step logged twice, none missing at the end
