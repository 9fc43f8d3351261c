"""Chat logs as training inputs (`distilflow inputs-from-logs`), in each of the three forms people have: OpenAI
chat-completions request logs (request body and response), stored-completions exports, plain `messages` JSONL. The
logged answers are either kept as the recorded teacher's answers or discarded, so that the job's teacher answers."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, write_jsonl
from openai_server import OpenAIServer, ServerConfig, answer_for, prompt_of

from distilflow.jobspec import parse_spec
from distilflow.pipeline.runner import run_job
from distilflow.teachers.logs import import_logs
from distilflow.workspace import Workspace

SYSTEM = {"role": "system", "content": "You are the support assistant of a bank."}


def exchange(i: int) -> tuple[list[dict], str]:
    return [SYSTEM, {"role": "user", "content": f"My card number {i} does not work, what now?"}], f"Logged answer {i}."


def completion(answer: str) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 5}}


FORMS = {
    # an API gateway's request log: the request body, then the response
    "request_log": lambda m, a: {"request": {"model": "gpt-4o", "messages": m, "temperature": 0}, "response": completion(a)},
    # a stored-completions export: the completion object with the request's messages
    "stored_completions": lambda m, a: {**completion(a), "messages": m, "metadata": {"app": "support"}},
    # plain chat JSONL: the answer is the final assistant turn
    "messages": lambda m, a: {"messages": [*m, {"role": "assistant", "content": a}]},
}


def write_logs(path, form: str, n: int = 6) -> None:
    rows = [FORMS[form](*exchange(i)) for i in range(n)]
    write_jsonl(path, [*rows, rows[0]])  # logs repeat themselves: the repeat is kept once


def spec_for(folder, models, inputs, teacher: dict):
    write_jsonl(folder / "test.jsonl", [{"messages": [{"role": "user", "content": "Hello?"},
                                                      {"role": "assistant", "content": "Hi."}]}])
    return parse_spec({"name": "logs", "task_type": "conversation", "teacher": teacher,
                       "student": {"model": str(models["student"])}, "training_data": str(inputs),
                       "test_data": "test.jsonl", "generation": {"max_tokens": 16}}, "job.yaml", folder)


def assistant_answers(workspace: Workspace) -> dict[str, str]:
    rows = [json.loads(line) for line in workspace.job("logs").synthetic_split("train").read_text().splitlines()]
    return {r["messages"][-2]["content"]: r["messages"][-1]["content"] for r in rows}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_logged_answers_are_kept_as_the_recorded_teachers(tmp_path, tiny_models, form):
    write_logs(tmp_path / "logs.jsonl", form)
    imported = import_logs(tmp_path / "logs.jsonl", tmp_path / "from-logs", "keep")
    assert (imported.rows, imported.kept, imported.answers, imported.skipped) == (7, 6, 6, {"duplicate": 1})
    inputs = [json.loads(line) for line in imported.inputs.read_text().splitlines()]
    assert inputs[2]["messages"] == exchange(2)[0]  # the prompt turns, system included, no answer
    spec = spec_for(tmp_path, tiny_models, imported.inputs, {"backend": "recorded", "model": "logged", "path": str(imported.recorded)})
    workspace = Workspace(tmp_path / "runs")
    assert run_job(spec, workspace, ["generate"]).stage("generate").status == "completed"
    assert assistant_answers(workspace) == {exchange(i)[0][1]["content"]: exchange(i)[1] for i in range(6)}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_discarded_answers_are_asked_of_the_teacher_afresh(tmp_path, tiny_models, monkeypatch, form):
    monkeypatch.setenv("DISTIL_TEST_KEY", "sk-test")
    write_logs(tmp_path / "logs.jsonl", form)
    # a bare request log line (no response) is an input too
    with (tmp_path / "logs.jsonl").open("a") as handle:
        handle.write(json.dumps({"model": "gpt-4o", "messages": exchange(9)[0]}) + "\n")
    imported = import_logs(tmp_path / "logs.jsonl", tmp_path / "from-logs", "discard")
    assert imported.recorded is None and not (tmp_path / "from-logs" / "recorded.jsonl").exists()
    assert (imported.kept, imported.answers) == (7, 6)
    assert "Logged answer" not in imported.inputs.read_text()
    with OpenAIServer(ServerConfig()) as server:
        spec = spec_for(tmp_path, tiny_models, imported.inputs,
                        {"backend": "openai", "model": "m", "base_url": server.url, "api_key_env": "DISTIL_TEST_KEY"})
        workspace = Workspace(tmp_path / "runs")
        assert run_job(spec, workspace, ["generate"]).stage("generate").status == "completed"
        assert server.stats()["requests"] == 7
    answers = assistant_answers(workspace)
    assert answers[exchange(9)[0][1]["content"]] == answer_for(prompt_of(exchange(9)[0]))
    assert not any(a.startswith("Logged answer") for a in answers.values())


def test_the_command_says_what_it_wrote_and_how_to_use_it(tmp_path):
    write_logs(tmp_path / "logs.jsonl", "request_log", n=3)
    done = run_cli("inputs-from-logs", str(tmp_path / "logs.jsonl"), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "3 training inputs from 4 logged rows" in done.stdout and "backend: recorded" in done.stdout
    bad = run_cli("inputs-from-logs", str(tmp_path / "logs.jsonl"), "--out", str(tmp_path / "out"), "--answers", "x")
    assert bad.returncode == 1 and "--answers is keep or discard" in bad.stderr
