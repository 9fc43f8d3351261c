"""Dead endpoints and odd servers, as a user meets them: a closed port, a server that turns to 400 mid-run, and
Retry-After values that are not usable numbers. Real CLI processes against the fault-injecting server on
127.0.0.1 (tests/openai_server.py)."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path

import pytest

from conftest import run_cli, write_job
from distilflow.jobspec import TeacherSpec
from distilflow.teachers import GenerationParams, TeacherAnswer, TeacherRequest, limits, load_teacher
from openai_server import OpenAIServer, ServerConfig, prompt_of
from virtual_clock import VirtualClock

KEY = "sk-reliability-0123456789abcdef"


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("RELIABILITY_KEY", KEY)


def closed_port_url() -> str:
    """The URL of a port nothing listens on (bound, then closed: the OS refuses connections to it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def api_job(folder: Path, tiny_models: dict, base_url: str, n_train: int, **teacher) -> Path:
    section = {"backend": "openai", "model": "teacher-model", "base_url": base_url, "api_key_env": "RELIABILITY_KEY",
               **teacher}
    return write_job(folder, tiny_models, name="dead-endpoint", n_train=n_train, n_val=0, teacher=section)


def cached_answers(workspace: Path) -> int:
    path = workspace / "jobs" / "dead-endpoint" / "cache" / "teacher.sqlite"
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM answers").fetchone()[0]


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_a_closed_port_ends_the_stage_for_1000_rows_in_seconds(tmp_path, tiny_models):
    spec = api_job(tmp_path / "job", tiny_models, closed_port_url(), n_train=1000, max_concurrency=16)
    # Measured here: ~4 s in all (CLI start and prepare included); before the breaker, about half an hour. The
    # deadline (run_cli raises past it) is generous: what shows the breaker at work is the message.
    result = run_cli("generate", str(spec), "--workspace", str(tmp_path / "ws"), timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    message = last_line(result.stderr)
    assert message.startswith("error: the teacher endpoint http://127.0.0.1:")
    assert "failed 20 requests in a row" in message and "connection refused" in message
    assert "teacher.base_url" in message and message.count(". ") == 0  # one sentence
    shown = json.loads(run_cli("jobs", "show", "dead-endpoint", "--json", "-w", str(tmp_path / "ws")).stdout)
    assert shown["status"] == "failed" and "failed 20 requests in a row" in shown["error"]


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_a_server_that_turns_to_400_ends_the_stage_and_keeps_the_answers_it_gave(tmp_path, tiny_models):
    workspace = tmp_path / "ws"
    config = ServerConfig(force_status=402, force_status_after=30, echo_auth_in_errors=True)
    with OpenAIServer(config) as server:
        spec = api_job(tmp_path / "job", tiny_models, server.url, n_train=200, max_concurrency=4)
        failed = run_cli("generate", str(spec), "--workspace", str(workspace))
        asked, answered = server.stats()["requests"], server.stats()["answers"]
    assert failed.returncode == 1, failed.stderr
    message = last_line(failed.stderr)
    assert "failed 20 requests in a row" in message and "rejected by the endpoint (402)" in message, message
    assert KEY not in failed.stderr + failed.stdout
    assert asked <= 30 + 20 + 4  # the answers, the 20 failures, and what was in flight
    # every answer given before is kept (30, or a few more that were in flight when the server turned)
    assert 30 <= cached_answers(workspace) == answered <= 30 + 4

    with OpenAIServer(ServerConfig()) as healthy:  # the same model, back to health
        spec = api_job(tmp_path / "job", tiny_models, healthy.url, n_train=200, max_concurrency=4)
        done = run_cli("generate", str(spec), "--workspace", str(workspace))
        assert done.returncode == 0, done.stderr
        assert healthy.stats()["answers"] == 200 - answered  # only the rest is asked for


@pytest.mark.parametrize("retry_after", ["nan", "inf", "-inf", "0", "-5", "Wed, 21 Oct 2015 07:28:00 GMT", "soon"])
def test_unusable_retry_after_backs_off_instead_of_hanging_or_bursting(monkeypatch, retry_after):
    monkeypatch.setattr(limits, "BACKOFF_BASE_S", 0.2)  # the first retry waits 0.1..0.2 s
    config = ServerConfig(rate_429=1.0, retry_after_header=retry_after)  # every first attempt: 429 + that header
    with OpenAIServer(config) as server:
        spec = TeacherSpec(model="m", backend="openai", base_url=server.url, api_key_env="RELIABILITY_KEY",
                           max_concurrency=4)
        requests = [TeacherRequest(key=f"k{i}", messages=[{"role": "user", "content": f"q {i}"}]) for i in range(4)]
        teacher = load_teacher(spec)
        teacher.clock = VirtualClock()  # records each wait before a retry, without waiting
        results = list(teacher.generate(requests, GenerationParams(max_tokens=8)))
        attempts = server.stats()["attempts"]
    assert all(isinstance(r, TeacherAnswer) for r in results) and len(results) == 4
    assert sorted(attempts) == sorted(prompt_of(r.messages) for r in requests) and set(attempts.values()) == {2}
    # One wait per retry, each the exponential floor: never an instant retry (a burst), never the header's value
    # taken at its word (an endless or a 300 s wait: a hang).
    assert len(teacher.clock.sleeps) == 4 and all(0.1 <= s <= 0.2 for s in teacher.clock.sleeps)
