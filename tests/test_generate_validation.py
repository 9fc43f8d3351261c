"""Validated teacher data: per-task checks, reference/majority verification, duplicates, refusals, lengths.

The teacher is the OpenAI-protocol test server answering fixed texts per prompt; every run is the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import nli_rows, run_cli, write_job
from distilflow.generate.synthetic import shingles
from distilflow.metrics.near_duplicates import jaccard
from openai_server import OpenAIServer, ServerConfig

NO_MODELS = {"teacher": "unused", "student": "set by _real_student"}


@pytest.fixture(autouse=True)
def _real_student(tiny_models):
    """The teacher is an API (or recorded answers), but the student must exist: prepare checks it before paying."""
    NO_MODELS["student"] = str(tiny_models["student"])


def run_generate(tmp_path: Path, answers: dict[str, list[str]], *, task_type: str, rows, n_train: int,
                 generation: dict, n_val: int = 1) -> tuple[object, Path]:
    with OpenAIServer(ServerConfig(answers=answers)) as server:
        spec = write_job(tmp_path, NO_MODELS, task_type=task_type, rows=rows, n_train=n_train, n_val=n_val,
                         name="checked", teacher={"backend": "openai", "model": "t", "base_url": server.url},
                         generation={"max_tokens": 16, **generation})
        result = run_cli("generate", str(spec), "--workspace", str(tmp_path / "ws"))
    return result, tmp_path / "ws" / "jobs" / "checked"


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def metrics_of(tmp_path: Path) -> dict:
    shown = run_cli("jobs", "show", "checked", "--json", "--workspace", str(tmp_path / "ws"))
    return next(s for s in json.loads(shown.stdout)["stages"] if s["stage"] == "generate")["metrics"]


def test_nli_answers_are_checked_against_the_reference(tmp_path):
    # nli_rows: row i has label i % 3 (entailment, neutral, contradiction); "A man number i is ..." is its premise.
    answers = {
        "A man number 0 is": ["Entailment."],
        "A man number 1 is": ["contradiction"],                         # the reference says neutral
        "A man number 2 is": [""],                                      # empty
        "A man number 3 is": ["I'm sorry, but I cannot help with that."],
        "A man number 4 is": ["It is hard to say."],                    # no label
        "A man number 5 is": ["The answer is contradiction."],
        "A man number 100 is": ["neutral"],                             # the validation row
    }
    result, job = run_generate(tmp_path, answers, task_type="nli", rows=nli_rows, n_train=6,
                               generation={"verify": "reference"})
    assert result.returncode == 0, result.stderr
    accepted = rows_of(job / "synthetic" / "train.jsonl")
    assert [(r["id"], r["messages"][-1]["content"]) for r in accepted] == [
        ("train-1", "Entailment."), ("train-6", "The answer is contradiction.")]
    rejected = {r["id"]: r["reason"] for r in rows_of(job / "synthetic" / "rejected.jsonl")}
    assert rejected == {"train-2": "disagrees_with_reference", "train-3": "empty", "train-4": "refusal",
                        "train-5": "unparseable"}
    metrics = metrics_of(tmp_path)
    assert metrics["rejected_by_reason"] == {"disagrees_with_reference": 1, "empty": 1, "refusal": 1, "unparseable": 1}
    assert metrics["accepted"] == {"train": 2, "validation": 1}


def test_majority_vote_keeps_the_answer_most_samples_agree_on(tmp_path):
    answers = {
        "A man number 0 is": ["neutral", "Entailment", "It is neutral."],    # 2 of 3 say neutral (reference: entailment)
        "A man number 1 is": ["entailment", "neutral", "contradiction"],     # no majority
        "A man number 2 is": ["contradiction", "contradiction", "neutral"],
        "A man number 100 is": ["entailment"],
    }
    result, job = run_generate(tmp_path, answers, task_type="nli", rows=nli_rows, n_train=3,
                               generation={"verify": "majority", "num_samples": 3, "temperature": 1.0})
    assert result.returncode == 0, result.stderr
    accepted = rows_of(job / "synthetic" / "train.jsonl")
    assert [(r["id"], r["sample"], r["messages"][-1]["content"]) for r in accepted] == [
        ("train-1", 0, "neutral"), ("train-3", 0, "contradiction")]
    reasons = metrics_of(tmp_path)["rejected_by_reason"]
    # The validation row's one fixed answer, sampled 3 times, adds two majority duplicates.
    assert reasons == {"not_majority_choice": 2, "majority_duplicate": 4, "no_majority": 3}


def test_duplicate_and_near_duplicate_samples_are_removed(tmp_path):
    def rows(n: int, offset: int = 0):
        return [{"messages": [{"role": "user", "content": f"Tell me about cats, take {i}."}]}
                for i in range(offset, offset + n)]

    answers = {"take 0.": [
        "The cat sat on the warm mat today and purred.",
        "The cat sat on the warm mat today and purred.",        # exact duplicate
        "the cat sat on the WARM mat today, and purred!",       # same words: near-duplicate
        "The cat sat on the warm mat today and purred loudly.",  # one word more: shingle near-duplicate
        "Dogs run in the park while the owners chat nearby.",
    ], "take 100.": ["Alpha one.", "Beta two.", "Gamma three.", "Delta four.", "Epsilon five."]}
    result, job = run_generate(tmp_path, answers, task_type="conversation", rows=rows, n_train=1,
                               generation={"verify": "none", "num_samples": 5, "temperature": 1.0})
    assert result.returncode == 0, result.stderr
    kept = [r["messages"][-1]["content"] for r in rows_of(job / "synthetic" / "train.jsonl")]
    assert kept == [answers["take 0."][0], answers["take 0."][4]]
    assert metrics_of(tmp_path)["rejected_by_reason"] == {"duplicate": 1, "near_duplicate": 2}


def test_summaries_outside_the_length_bounds_are_rejected(tmp_path):
    def rows(n: int, offset: int = 0):
        return [{"document": f"Document {i}: " + "the river rose and the town moved to higher ground. " * 5,
                 "summary": "The town moved."} for i in range(offset, offset + n)]

    answers = {"Document 0:": ["Too short."], "Document 1:": ["word " * 250],
               "Document 2:": ["The river rose, so the town moved uphill."],
               "Document 100:": ["The town moved uphill after the river rose."]}
    result, job = run_generate(tmp_path, answers, task_type="summarization", rows=rows, n_train=3,
                               generation={"verify": "reference"})
    assert result.returncode == 0, result.stderr
    assert [r["id"] for r in rows_of(job / "synthetic" / "train.jsonl")] == ["train-3"]
    assert metrics_of(tmp_path)["rejected_by_reason"] == {"too_short": 1, "too_long": 1}


def test_shingle_similarity():
    a = shingles("The cat sat on the warm mat today and purred.")
    assert jaccard(a, shingles("the cat sat on the warm mat today and purred loudly")) >= 0.8
    assert jaccard(a, shingles("Dogs run in the park while the owners chat nearby.")) == 0.0
    assert jaccard(shingles("yes"), shingles("Yes!")) == 1.0


def test_nothing_usable_is_a_clear_error(tmp_path):
    answers = {"A man number": ["I cannot answer that."]}
    result, job = run_generate(tmp_path, answers, task_type="nli", rows=nli_rows, n_train=3,
                               generation={"verify": "reference"})
    assert result.returncode == 1
    assert "no verified teacher data to train on" in result.stderr and "refusal" in result.stderr
