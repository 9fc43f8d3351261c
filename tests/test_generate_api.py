"""`distilflow generate` with an OpenAI-compatible teacher, as a user runs it: real CLI processes against the
fault-injecting server on 127.0.0.1, kill -9 and resume, failures, dry run, teacher-only prompts, log-probs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from conftest import conversation_rows, run_cli, start_cli, write_job
from distilflow.teachers.cache import TeacherCache
from openai_server import OpenAIServer, ServerConfig, answer_for, prompt_of

KEY = "sk-live-TOPSECRET-0123456789abcdef"
NO_MODELS = {"teacher": "unused", "student": "set by _real_student"}


@pytest.fixture(autouse=True)
def _real_student(tiny_models):
    """The teacher is an API (or recorded answers), but the student must exist: prepare checks it before paying."""
    NO_MODELS["student"] = str(tiny_models["student"])


@pytest.fixture(autouse=True)
def _api_key(monkeypatch):
    monkeypatch.setenv("DISTIL_TEST_KEY", KEY)


def api_job(folder: Path, server: OpenAIServer, *, n_train: int = 10, n_val: int = 2, rows=conversation_rows,
            task_type: str = "conversation", teacher: dict | None = None, **sections) -> Path:
    teacher_section = {"backend": "openai", "model": "teacher-model", "base_url": server.url,
                       "api_key_env": "DISTIL_TEST_KEY", "max_concurrency": 8, **(teacher or {})}
    return write_job(folder, NO_MODELS, task_type=task_type, rows=rows, n_train=n_train, n_val=n_val,
                     name="api-job", teacher=teacher_section, **sections)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def job_dir(workspace: Path) -> Path:
    return workspace / "jobs" / "api-job"


def generate_metrics(workspace: Path) -> dict:
    shown = run_cli("jobs", "show", "api-job", "--json", "--workspace", str(workspace))
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    return next(s for s in record["stages"] if s["stage"] == "generate")["metrics"]


def assert_key_nowhere(workspace: Path) -> None:
    files = [path for path in workspace.rglob("*") if path.is_file()]
    assert files, f"nothing was written under {workspace}"
    for path in files:
        assert KEY.encode() not in path.read_bytes(), f"the API key was written to {path}"


def assert_rows_are_the_servers_answers(rows: list[dict], expected_ids: set[str]) -> None:
    assert sorted(r["id"] for r in rows) == sorted(expected_ids)  # exactly one row per input
    for row in rows:
        prompt, answer = row["messages"][:-1], row["messages"][-1]
        assert answer["role"] == "assistant"
        assert answer["content"] == answer_for(prompt_of(prompt)), row["id"]  # its own prompt's answer, byte for byte


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_generate_through_faults_keeps_every_answer_with_its_prompt(tmp_path):
    config = ServerConfig(latency=0.01, rate_429=0.1, rate_500=0.1, rate_drop=0.1, rate_malformed=0.05,
                          rate_truncate=0.05, retry_after=0.2, echo_auth_in_errors=True)
    with OpenAIServer(config) as server:
        spec = api_job(tmp_path, server, n_train=40, n_val=5,
                       teacher={"price_per_million_input_tokens": 1.0, "price_per_million_output_tokens": 2.0})
        result = run_cli("generate", str(spec), "--workspace", str(tmp_path / "ws"))
        stats = server.stats()
    assert result.returncode == 0, result.stderr
    synthetic = job_dir(tmp_path / "ws") / "synthetic"
    assert_rows_are_the_servers_answers(read_rows(synthetic / "train.jsonl"), {f"train-{i}" for i in range(1, 41)})
    assert_rows_are_the_servers_answers(read_rows(synthetic / "validation.jsonl"),
                                        {f"validation-{i}" for i in range(1, 6)})
    assert read_rows(synthetic / "failed.jsonl") == []
    metrics = generate_metrics(tmp_path / "ws")
    assert metrics["requests"] == 45 and metrics["failed"] == 0
    run = metrics["this_run"]
    assert run["retries"] == sum(stats["faults"].values()) > 0
    assert run["requests"] == stats["requests"]
    assert metrics["prompt_tokens"] > 0 and metrics["completion_tokens"] > 0
    expected_cost = (metrics["prompt_tokens"] * 1.0 + metrics["completion_tokens"] * 2.0) / 1e6
    assert metrics["cost_usd"] == pytest.approx(expected_cost, rel=1e-6)
    assert "rows/s" in (result.stderr + result.stdout)
    assert_key_nowhere(tmp_path / "ws")


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_kill_minus_9_then_resume_pays_at_most_max_concurrency_twice(tmp_path):
    concurrency = 8
    config = ServerConfig(latency=0.04, rate_429=0.05, rate_500=0.05, rate_drop=0.05, rate_truncate=0.03,
                          retry_after=0.1)
    with OpenAIServer(config) as server:
        spec = api_job(tmp_path, server, n_train=300, n_val=20, teacher={"max_concurrency": concurrency})
        workspace = tmp_path / "ws"
        cache_path = job_dir(workspace) / "cache" / "teacher.sqlite"
        process = start_cli("generate", str(spec), "--workspace", str(workspace))
        deadline = time.monotonic() + 60
        cached = 0
        while cached < 60:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "no answers were cached in time"
            time.sleep(0.05)
            if cache_path.exists():
                try:
                    with sqlite3.connect(cache_path, timeout=5) as db:
                        cached = db.execute("SELECT count(*) FROM answers").fetchone()[0]
                except sqlite3.OperationalError:
                    pass
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        answered_before = server.stats()["answers"]
        assert answered_before < 320  # killed part-way
        result = run_cli("generate", str(spec), "--workspace", str(workspace))
        stats = server.stats()
    assert result.returncode == 0, result.stderr
    synthetic = job_dir(workspace) / "synthetic"
    assert_rows_are_the_servers_answers(read_rows(synthetic / "train.jsonl"), {f"train-{i}" for i in range(1, 301)})
    assert_rows_are_the_servers_answers(read_rows(synthetic / "validation.jsonl"),
                                        {f"validation-{i}" for i in range(1, 21)})
    twice = [prompt for prompt, n in stats["answered"].items() if n > 1]
    assert len(twice) <= concurrency, f"{len(twice)} prompts answered twice"
    assert set(stats["answered"]) == {prompt_of(r["messages"][:-1]) for r in read_rows(synthetic / "train.jsonl")
                                      + read_rows(synthetic / "validation.jsonl")}
    assert generate_metrics(workspace)["cached_before"] >= 60
    assert_key_nowhere(workspace)


def test_too_many_failures_fail_the_stage_and_keep_what_succeeded(tmp_path):
    with OpenAIServer(ServerConfig(fail_always=("number 3,", "number 7,"))) as server:
        spec = api_job(tmp_path, server, teacher={"max_retries": 1})
        workspace = tmp_path / "ws"
        failed = run_cli("generate", str(spec), "--workspace", str(workspace))
        assert failed.returncode == 1
        message = failed.stderr.strip().splitlines()[-1]
        assert "the teacher failed on 2 of 12 inputs" in message and "generation.min_success_ratio=0.9" in message
        assert "Traceback" not in failed.stderr
        failures = read_rows(job_dir(workspace) / "synthetic" / "failed.jsonl")
        assert sorted(f["ids"][0] for f in failures) == ["train-4", "train-8"]
        assert all("server error (500)" in f["reason"] and "gave up after 2 attempts" in f["reason"] for f in failures)
        with TeacherCache(job_dir(workspace) / "cache" / "teacher.sqlite") as cache:
            assert cache.count() == 10  # the answers that succeeded are kept
        attempts_before = server.stats()["requests"]

        # A lower threshold accepts the run; only the two failed inputs are asked again.
        spec = api_job(tmp_path, server, teacher={"max_retries": 1}, generation={"max_tokens": 8,
                                                                                  "min_success_ratio": 0.8})
        passed = run_cli("generate", str(spec), "--workspace", str(workspace))
        assert passed.returncode == 0, passed.stderr
        assert server.stats()["requests"] - attempts_before == 4  # 2 inputs x 2 attempts
    assert len(read_rows(job_dir(workspace) / "synthetic" / "train.jsonl")) == 8
    assert generate_metrics(workspace)["failed"] == 2


def test_dry_run_estimates_without_sending_or_writing(tmp_path):
    with OpenAIServer() as server:
        spec = api_job(tmp_path, server, teacher={"price_per_million_input_tokens": 2.5,
                                                  "price_per_million_output_tokens": 10.0},
                       generation={"max_tokens": 100, "num_samples": 2})
        workspace = tmp_path / "ws"
        dry = run_cli("generate", str(spec), "--dry-run", "--workspace", str(workspace))
        assert dry.returncode == 0, dry.stderr
        assert server.stats()["requests"] == 0
        assert not workspace.exists()
        out = dry.stdout
        assert "requests to send:  12 (2 samples each" in out
        assert "completion tokens: at most 2,400 (max_tokens 100 x 2 x 12)" in out
        assert "estimated with chars/4 heuristic" in out or "estimated with tiktoken" in out
        assert "at most $0.0" in out and "cost:" in out
        prompt_chars = sum(len(r["messages"][0]["content"]) for r in conversation_rows(10) + conversation_rows(2, 100))
        estimated = int(out.split("prompt tokens:     ~")[1].split()[0].replace(",", ""))
        assert prompt_chars / 8 < estimated < prompt_chars  # about chars/4 plus a few per message

        assert run_cli("generate", str(spec), "--workspace", str(workspace)).returncode == 0
        again = run_cli("generate", str(spec), "--dry-run", "--workspace", str(workspace))
        assert "already answered:  12" in again.stdout and "requests to send:  0" in again.stdout


def test_system_and_teacher_prompts_reach_the_teacher_only(tmp_path):
    with OpenAIServer() as server:
        spec = api_job(tmp_path, server, n_train=4, n_val=1,
                       generation={"max_tokens": 8, "system_prompt": "You are a terse expert.",
                                   "teacher_prompt": "Think step by step.", "temperature": 0.3, "top_p": 0.8,
                                   "seed": 5, "stop": ["###"]})
        result = run_cli("generate", str(spec), "--workspace", str(tmp_path / "ws"))
        bodies = list(server.state.bodies)
    assert result.returncode == 0, result.stderr
    for body in bodies:
        system, user = body["messages"]
        assert system == {"role": "system", "content": "You are a terse expert."}
        assert user["content"].startswith("Think step by step.\n\nHello number ")
        assert body["temperature"] == 0.3 and body["top_p"] == 0.8 and body["seed"] == 5 and body["stop"] == ["###"]
        assert body["max_tokens"] == 8
    by_prompt = {b["messages"][1]["content"].split("\n\n", 1)[1]: prompt_of(b["messages"]) for b in bodies}
    for row in read_rows(job_dir(tmp_path / "ws") / "synthetic" / "train.jsonl"):
        prompt, answer = row["messages"][:-1], row["messages"][-1]["content"]
        assert prompt == [{"role": "user", "content": prompt[0]["content"]}]  # the student sees the plain prompt
        assert answer == answer_for(by_prompt[prompt[0]["content"]])


def test_top_logprobs_are_joined_to_synthetic_rows_by_teacher_key(tmp_path):
    with OpenAIServer() as server:
        spec = api_job(tmp_path, server, n_train=4, n_val=1, generation={"max_tokens": 8, "top_logprobs": 3,
                                                                         "num_samples": 2, "temperature": 1.0})
        result = run_cli("generate", str(spec), "--workspace", str(tmp_path / "ws"))
    assert result.returncode == 0, result.stderr
    rows = read_rows(job_dir(tmp_path / "ws") / "synthetic" / "train.jsonl")
    assert len(rows) == 8 and {r["sample"] for r in rows} == {0, 1}
    # Log-probs stay out of the main rows (they live compactly in the cache, found by teacher_key).
    assert all(set(r) == {"id", "sample", "teacher_key", "messages", "reference", "source"} for r in rows)
    with TeacherCache(job_dir(tmp_path / "ws") / "cache" / "teacher.sqlite") as cache:
        for row in rows:
            top = cache.get(row["teacher_key"], with_logprobs=True).top_logprobs[row["sample"]]
            words = row["messages"][-1]["content"].split(" ")
            assert len(top.tokens) == len(words) and [t[0] for t in top.tokens[1:]] == [" " + w for w in words[1:]]
            assert all(len(r) == 3 for r in top.logprobs) and top.token_ids is None


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_cancel_then_resume_against_a_restarted_server_asks_only_for_the_rest(tmp_path):
    workspace = tmp_path / "ws"
    cache_path = job_dir(workspace) / "cache" / "teacher.sqlite"
    with OpenAIServer(ServerConfig(latency=0.05)) as server:
        spec = api_job(tmp_path, server, n_train=200, n_val=1, teacher={"max_concurrency": 4})
        process = start_cli("generate", str(spec), "--workspace", str(workspace))
        deadline = time.monotonic() + 60
        while not (cache_path.exists() and TeacherCache(cache_path).count() >= 20):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)  # what `distilflow jobs cancel` sends
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 130, output
    assert "canceled" in output
    with TeacherCache(cache_path) as cache:
        stored = cache.count()
    assert 20 <= stored < 200

    with OpenAIServer(ServerConfig(latency=0.01)) as restarted:  # the same model, now on another port
        spec = api_job(tmp_path, restarted, n_train=200, n_val=1, teacher={"max_concurrency": 4})
        result = run_cli("generate", str(spec), "--workspace", str(workspace))
        asked = restarted.stats()["answers"]
    assert result.returncode == 0, result.stderr
    assert asked == 200 - stored  # 200 distinct prompts (the validation row repeats train-101's prompt)
    assert_rows_are_the_servers_answers(read_rows(job_dir(workspace) / "synthetic" / "train.jsonl"),
                                        {f"train-{i}" for i in range(1, 201)})
