"""No secret reaches the disk or the terminal: the API key (`api_key_env`) and a header given as `{env: NAME}`,
against a careless server that quotes every credential header in its error bodies, after a run that succeeds
(teacher stage, training, evaluation of the API teacher, report; with --debug) and runs that fail (a refused key,
with and without --debug; 500s on most inputs). Every file of the workspace, the SQLite files included, and everything
printed are searched for both values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import cli_env, write_job
from openai_server import OpenAIServer, ServerConfig

# Not shaped like any known key: only the values distilflow read and remembered can be scrubbed here.
KEY = "plainSecretValue7Hq2x9"
HEADER = "headerSecretZ81k3wQ"
SECRETS = {"SECRET_TEST_KEY": KEY, "SECRET_TEST_HEADER": HEADER}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distilflow", *args], capture_output=True, text=True, timeout=600,
                          env=cli_env(**SECRETS))


def job(folder: Path, tiny_models: dict, server: OpenAIServer, name: str, **sections) -> Path:
    teacher = {"backend": "openai", "model": "teacher-model", "base_url": server.url, "api_key_env": "SECRET_TEST_KEY",
               "headers": {"X-Org-Token": {"env": "SECRET_TEST_HEADER"}, "X-Team": "distil"}, "max_retries": 1}
    # Only the teacher is evaluated: it is the model behind the endpoint (a local student has no secret to leak).
    return write_job(folder / name, tiny_models, name=name, n_train=10, n_val=0, n_test=3, teacher=teacher,
                     evaluation={"models": ["teacher"], "warmup": 1, "batch_size": 2, "bootstrap_samples": 20},
                     **sections)


def assert_nowhere(workspace: Path, outputs: list[subprocess.CompletedProcess]) -> None:
    files = [p for p in workspace.rglob("*") if p.is_file()]
    assert any(p.suffix in (".sqlite", ".db") for p in files)  # the databases are searched too
    for path in files:
        data = path.read_bytes()
        for secret in (KEY, HEADER):
            assert secret.encode() not in data, f"a secret was written to {path}"
    for result in outputs:
        for secret in (KEY, HEADER):
            assert secret not in result.stdout + result.stderr, f"a secret was printed:\n{result.stderr[-2000:]}"


def test_no_secret_on_disk_or_screen_after_runs_that_succeed_and_fail(tmp_path, tiny_models):
    workspace = tmp_path / "ws"
    outputs = []
    # Success, with a careless server: one failed teacher input and one refused test input, both echoing secrets;
    # with --debug, which prints the most (debug logs).
    config = ServerConfig(echo_auth_in_errors=True, fail_always=("number 3,",), bad_request=("number 201,",))
    with OpenAIServer(config) as server:
        done = run("run", str(job(tmp_path, tiny_models, server, "ok")), "--workspace", str(workspace), "--debug")
        outputs.append(done)
        sent = server.state.headers[0]
    assert done.returncode == 0, done.stderr[-3000:]
    assert sent["authorization"] == f"Bearer {KEY}" and sent["x-org-token"] == HEADER  # both were really used
    reasons = (workspace / "jobs" / "ok" / "synthetic" / "failed.jsonl").read_text()
    assert "server error (500)" in reasons and "***" in reasons  # the echoed secrets, scrubbed
    predictions = (workspace / "jobs" / "ok" / "eval" / "teacher" / "predictions.jsonl").read_text()
    assert "(400)" in predictions and "***" in predictions

    # Failures: a refused key (with and without --debug), and 500s on most inputs.
    with OpenAIServer(ServerConfig(force_status=401, echo_auth_in_errors=True)) as server:
        for name, extra in (("refused", []), ("refused-debug", ["--debug"])):
            failed = run("run", str(job(tmp_path, tiny_models, server, name)), "--workspace", str(workspace), *extra)
            outputs.append(failed)
            assert failed.returncode == 1 and "refused the API key (401)" in failed.stderr
        assert "Traceback" in outputs[-1].stderr  # --debug shows it, scrubbed
    with OpenAIServer(ServerConfig(echo_auth_in_errors=True, fail_always=("number",))) as server:
        failed = run("generate", str(job(tmp_path, tiny_models, server, "errors")), "--workspace", str(workspace))
        outputs.append(failed)
        assert failed.returncode == 1 and "generation.min_success_ratio" in failed.stderr
    assert_nowhere(workspace, outputs)
