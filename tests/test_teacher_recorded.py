"""Teacher backend `recorded`: answers a user already has, in the forms they come in, through the same validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import conversation_rows, run_cli, write_job, write_jsonl

NO_MODELS = {"teacher": "unused", "student": "set by _real_student"}


@pytest.fixture(autouse=True)
def _real_student(tiny_models):
    """The teacher is an API (or recorded answers), but the student must exist: prepare checks it before paying."""
    NO_MODELS["student"] = str(tiny_models["student"])


def user(i: int) -> dict:
    return {"role": "user", "content": f"Hello number {i}, how are you?"}


def completion(text: str) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-x",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}}


RECORDED = [
    {"messages": [user(0)], "response": "Answer zero."},
    {"prompt": "Hello number 1, how are you?", "completion": "Answer one."},
    {"messages": [user(2), {"role": "assistant", "content": "Answer two."}]},                # chat form
    {"messages": [user(3)], **{k: v for k, v in completion("Answer three.").items()}},       # stored completion
    {"request": {"model": "gpt-x", "messages": [user(4)]}, "response": completion("Answer four.")},
    {"custom_id": "r5", "body": {"messages": [user(5)]},                                     # batch API form
     "response": {"status_code": 200, "body": completion("Answer five.")}},
    {"messages": [{"role": "system", "content": "Another system prompt."}, user(6)], "response": "Answer six."},
    {"messages": [{"role": "user", "content": "  Hello number 7,\nhow are you?"}], "response": ""},  # empty answer
    {"messages": [user(100)], "response": "Validation answer."},
    {"messages": [user(101)], "response": ["Validation answer b."]},
]


def recorded_job(tmp_path: Path, recorded: list, **generation) -> Path:
    write_jsonl(tmp_path / "recorded.jsonl", recorded)
    return write_job(tmp_path, NO_MODELS, n_train=10, n_val=2, name="rec",
                     teacher={"backend": "recorded", "model": "my-old-teacher", "path": "recorded.jsonl"},
                     generation={"max_tokens": 16, **generation})


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_recorded_answers_in_every_form_are_matched_to_their_prompts(tmp_path):
    spec = recorded_job(tmp_path, RECORDED, min_success_ratio=0.8)
    result = run_cli("generate", str(spec), "--workspace", str(tmp_path / "ws"))
    assert result.returncode == 0, result.stderr
    synthetic = tmp_path / "ws" / "jobs" / "rec" / "synthetic"
    accepted = {r["messages"][0]["content"]: r["messages"][-1]["content"] for r in read(synthetic / "train.jsonl")}
    words = ["zero", "one", "two", "three", "four", "five", "six"]
    assert accepted == {f"Hello number {i}, how are you?": f"Answer {w}." for i, w in enumerate(words)}
    assert [r["reason"] for r in read(synthetic / "rejected.jsonl")] == ["empty"]  # number 7, same validation
    failed = read(synthetic / "failed.jsonl")
    assert sorted(f["ids"][0] for f in failed) == ["train-10", "train-9"]
    assert all(f["reason"] == "no recorded response for this prompt in recorded.jsonl" for f in failed)
    assert len(read(synthetic / "validation.jsonl")) == 2


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_unmatched_inputs_count_against_min_success_ratio(tmp_path):
    spec = recorded_job(tmp_path, RECORDED[:3])
    result = run_cli("generate", str(spec), "--workspace", str(tmp_path / "ws"))
    assert result.returncode == 1
    assert "the teacher failed on 9 of 12 inputs" in result.stderr


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_a_broken_recording_names_file_and_line(tmp_path):
    spec = recorded_job(tmp_path, [RECORDED[0], {"messages": [user(1)]}])
    result = run_cli("generate", str(spec), "--workspace", str(tmp_path / "ws"))
    assert result.returncode == 1
    assert "recorded.jsonl, line 2: no response found" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_editing_the_recording_gives_new_answers(tmp_path):
    spec = recorded_job(tmp_path, RECORDED, min_success_ratio=0.5)
    assert run_cli("generate", str(spec), "--workspace", str(tmp_path / "ws")).returncode == 0
    changed = [dict(RECORDED[0], response="A corrected zero."), *RECORDED[1:]]
    write_jsonl(tmp_path / "recorded.jsonl", changed)
    assert run_cli("generate", str(spec), "--workspace", str(tmp_path / "ws")).returncode == 0
    rows = read(tmp_path / "ws" / "jobs" / "rec" / "synthetic" / "train.jsonl")
    assert any(r["messages"][-1]["content"] == "A corrected zero." for r in rows)
    assert conversation_rows(1)[0]["messages"][0] == rows[0]["messages"][0]
