"""A command checks what it will run, not every stage: once the teacher stage is done, `distilflow report` and
`distilflow train` need neither the teacher's API key nor anything else only the teacher stage uses; the teacher
stage itself still refuses to start without its key, before any request."""

from __future__ import annotations

import os

import pytest
import subprocess
import sys

from conftest import SRC, write_job
from openai_server import OpenAIServer, ServerConfig


def _run(*args: str, key: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PREFLIGHT_TEST_KEY"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    if key is not None:
        env["PREFLIGHT_TEST_KEY"] = key
    return subprocess.run([sys.executable, "-m", "distilflow", *args], capture_output=True, text=True, timeout=600,
                          env=env)


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_report_and_train_of_a_finished_teacher_stage_need_no_teacher_key(tmp_path, tiny_models):
    with OpenAIServer(ServerConfig()) as server:
        teacher = {"backend": "openai", "model": "teacher-model", "base_url": server.url,
                   "api_key_env": "PREFLIGHT_TEST_KEY"}
        spec = write_job(tmp_path / "spec", tiny_models, name="keyless", n_train=8, n_val=0, n_test=3,
                         teacher=teacher, evaluation={"models": ["baseline", "distilled"], "bootstrap_samples": 10})
        ws = str(tmp_path / "ws")
        done = _run("run", str(spec), "--workspace", ws, key="k-123")
        assert done.returncode == 0, done.stderr[-3000:]
        asked = len(server.state.headers)
    report = tmp_path / "ws" / "jobs" / "keyless" / "report.md"
    report.unlink()

    again = _run("report", str(spec), "--workspace", ws, key=None)
    assert again.returncode == 0, again.stderr[-3000:]
    assert report.exists()
    retrained = _run("train", str(spec), "--workspace", ws, key=None)
    assert retrained.returncode == 0, retrained.stderr[-3000:]

    refused = _run("generate", str(spec), "--workspace", ws, key=None)
    assert refused.returncode == 1 and "PREFLIGHT_TEST_KEY" in refused.stderr, refused.stderr[-2000:]
    assert asked > 0  # the first run really went through the teacher endpoint
