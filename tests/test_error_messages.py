"""Messages that name the fix, as a user meets them through the real CLI: a workspace that is a file, a job folder
this user may not write, a model file it may not read, a job spec without its task type, and an OpenAI-compatible
server answering HTTP 200 with its own error (tests/openai_server.py). Each is one sentence naming the path (or the
key, or the server's words) and what to do; no traceback, no "internal error"."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import run_cli, write_job
from distilflow.jobspec import TeacherSpec
from distilflow.jobspec.names import TASK_TYPES
from distilflow.teachers import GenerationParams, TeacherAnswer, TeacherFailure, TeacherRequest, load_teacher
from openai_server import OpenAIServer, ServerConfig
from virtual_clock import VirtualClock

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def the_error(result: subprocess.CompletedProcess) -> str:
    """The command's error line, after checking that it failed with one and nothing worse."""
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    return errors[0]


def _drop_root_override() -> None:
    """In the child, before exec: root without the capabilities that let it ignore file permissions."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.fixture(scope="module")
def as_a_user() -> dict:
    """What run_cli needs so that file permissions bind the CLI: nothing for a normal user; as root (containers,
    CI), the CLI runs without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, which meets the permissions a user meets."""
    if os.geteuid() != 0:
        return {}
    probe = subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_drop_root_override, capture_output=True)
    if probe.returncode != 0:
        pytest.skip("running as root without the capability to drop root's permission override")
    return {"preexec_fn": _drop_root_override}


def test_a_workspace_that_is_a_file_says_so_and_where_jobs_go_instead(tmp_path):
    regular = tmp_path / "runs"
    regular.write_text("not a folder\n")
    spec = write_job(tmp_path / "job", {"teacher": tmp_path / "t", "student": tmp_path / "s"}, name="ws-file")
    for command in (["generate", str(spec)], ["jobs", "list"]):
        message = the_error(run_cli(*command, "--workspace", str(regular)))
        assert message == (f"error: the workspace {regular} is a file, not a folder; choose a folder for jobs "
                           f"(--workspace, $DISTILFLOW_HOME or `workspace:` in distilflow.yaml) or move the file away")
    below = the_error(run_cli("jobs", "list", "--workspace", str(regular / "inner")))
    assert f"the workspace {regular / 'inner'} cannot be a folder: {regular} is a file" in below
    assert "--workspace" in below and "move the file away" in below


def test_a_read_only_job_folder_names_the_folder_and_the_chmod(tmp_path, tiny_models, as_a_user):
    workspace = tmp_path / "ws"
    folder = workspace / "jobs" / "locked-out"
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    try:
        with OpenAIServer() as server:
            teacher = {"model": "teacher-model", "backend": "openai", "base_url": server.url}
            spec = write_job(tmp_path / "job", tiny_models, name="locked-out", n_train=2, n_val=0, teacher=teacher)
            message = the_error(run_cli("generate", str(spec), "--workspace", str(workspace), **as_a_user))
            asked = server.stats()["requests"]
    finally:
        folder.chmod(0o755)
    assert message.startswith("error: permission denied: user ") and f"may not write in the folder {folder};" in message
    assert f"(chmod -R u+w {folder})" in message
    assert asked == 0  # nothing was paid for a job that cannot be written


def test_a_model_file_this_user_cannot_read_is_named_with_the_chmod(tmp_path, tiny_models, as_a_user):
    model = shutil.copytree(tiny_models["student"], tmp_path / "student")
    weights = model / "model.safetensors"
    test_file = tmp_path / "test.jsonl"
    test_file.write_text(json.dumps({"messages": [{"role": "user", "content": "Hello"},
                                                  {"role": "assistant", "content": "Hi"}]}) + "\n")
    weights.chmod(0o000)
    try:
        result = run_cli("evaluate-model", str(model), "--task", "conversation", "--test-data", str(test_file),
                         "--workspace", str(tmp_path / "ws"), **as_a_user)
    finally:
        weights.chmod(0o644)
    message = the_error(result)
    assert "No such file" not in message  # what transformers says of an unreadable weights file
    assert f"cannot load model {model}: permission denied: user " in message
    assert message.endswith(f"may not read {weights}; make it readable (chmod u+r {weights})"), message


def test_a_model_in_a_folder_this_user_cannot_enter_names_that_folder(tmp_path, tiny_models, as_a_user):
    shelf = tmp_path / "shelf"
    model = shutil.copytree(tiny_models["student"], shelf / "student")
    spec = write_job(tmp_path / "job", {**tiny_models, "student": model}, name="shelved")
    shelf.chmod(0o000)
    try:
        result = run_cli("generate", str(spec), "--workspace", str(tmp_path / "ws"), **as_a_user)
    finally:
        shelf.chmod(0o755)
    message = the_error(result)
    assert f"may not enter the folder {shelf} (on the way to {model}); make it accessible (chmod u+rx {shelf})" \
        in message, message


@pytest.mark.parametrize("written", ["absent", "empty"])
def test_a_job_spec_without_task_type_says_the_key_is_missing(tmp_path, written):
    spec = write_job(tmp_path / "job", {"teacher": tmp_path / "t", "student": tmp_path / "s"}, name="untyped")
    data = yaml.safe_load(spec.read_text())
    if written == "absent":
        del data["task_type"]
    else:
        data["task_type"] = None  # `task_type:` with nothing after it
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    message = the_error(run_cli("generate", str(spec), "--workspace", str(tmp_path / "ws")))
    choices = ", ".join(repr(t) for t in TASK_TYPES[:-1]) + f" or {TASK_TYPES[-1]!r}"  # every type, the newest too
    assert "'classification'" in choices and "'extraction'" in choices
    expected = {"absent": f"missing required key 'task_type'; add it, set to one of {choices}",
                "empty": f"required key 'task_type' has no value; set it to one of {choices}"}[written]
    assert message == f"error: {spec}: {expected}"
    assert "Input should be" not in message


def _requests(n: int) -> list[TeacherRequest]:
    return [TeacherRequest(key=f"k{i}", messages=[{"role": "user", "content": f"question {i}?"}]) for i in range(n)]


@pytest.mark.parametrize("code, retried", [(None, True), (503, True), ("overloaded", True), (400, False)])
def test_http_200_with_an_error_is_retried_like_a_5xx_and_keeps_the_servers_words(monkeypatch, code, retried):
    """The request was accepted (a bad key or request gets its own status), so the server's failure is retried;
    a 4xx code in the body says the request itself is wrong: not retried."""
    monkeypatch.setenv("ERROR_200_KEY", "sk-test")
    config = ServerConfig(rate_error_200=1.0, error_200_code=code)  # every first attempt of a prompt
    with OpenAIServer(config) as server:
        spec = TeacherSpec(model="m", backend="openai", base_url=server.url, api_key_env="ERROR_200_KEY",
                           max_concurrency=2)
        teacher = load_teacher(spec)
        teacher.clock = VirtualClock()
        results = list(teacher.generate(_requests(3), GenerationParams(max_tokens=8)))
        attempts = server.stats()["attempts"]
    if retried:
        assert all(isinstance(r, TeacherAnswer) for r in results) and len(results) == 3
        assert set(attempts.values()) == {2} and teacher.stats()["server_errors"] == 3
        assert len(teacher.clock.sleeps) == 3  # each retry after a backoff wait
    else:
        assert all(isinstance(r, TeacherFailure) for r in results) and set(attempts.values()) == {1}
        assert all(r.reason == "the endpoint answered HTTP 200 with an error: model overloaded" for r in results)


def test_http_200_with_an_error_shows_the_servers_message_and_keeps_it_in_failed_jsonl(tmp_path, tiny_models):
    workspace = tmp_path / "ws"
    config = ServerConfig(rate_error_200=1.0, fault_attempts=100)  # the model stays overloaded
    with OpenAIServer(config) as server:
        teacher = {"model": "teacher-model", "backend": "openai", "base_url": server.url, "max_retries": 1}
        spec = write_job(tmp_path / "job", tiny_models, name="overloaded", n_train=3, n_val=0, teacher=teacher)
        result = run_cli("generate", str(spec), "--workspace", str(workspace))
        attempts = server.stats()["attempts"]
    message = the_error(result)
    assert set(attempts.values()) == {2}  # asked, then retried once (teacher.max_retries: 1)
    shown = " ".join(result.stderr.split())  # the terminal, without the line wrapping of the log
    assert "a teacher request failed: the endpoint answered HTTP 200 with an error: model overloaded" in shown
    failed = workspace / "jobs" / "overloaded" / "synthetic" / "failed.jsonl"
    assert str(failed) in message
    reasons = [json.loads(line)["reason"] for line in failed.read_text().splitlines()]
    assert len(reasons) == 3 and all(r == "the endpoint answered HTTP 200 with an error: model overloaded "
                                          "(gave up after 2 attempts)" for r in reasons)
