"""The data checks every job runs in prepare (prepare/): training rows that repeat held-out rows (data.overlap), and
what the report's data section is built from. The teacher is the OpenAI-protocol test server; runs are the real CLI."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import yaml
from conftest import run_cli, write_jsonl
from openai_server import OpenAIServer, ServerConfig

LABELS = ["card_arrival", "exchange_rate", "pin_blocked"]
TOPICS = ["my card has not arrived", "which exchange rate applies", "my pin is blocked"]
WORDS = ("please", "help", "today", "since", "monday", "again", "urgent", "bank", "branch", "account", "money",
         "travel", "abroad", "phone", "app", "online", "store", "friend", "family", "yesterday", "weekend",
         "order", "payment", "transfer", "salary", "rent", "holiday", "visa", "code", "number")


def intent_rows(n: int, offset: int = 0) -> list[dict]:
    """Distinct messages: the topic of the label, then six words drawn for the row (no two rows look alike)."""
    rows = []
    for i in range(offset, offset + n):
        rng = random.Random(i)
        rows.append({"text": f"{TOPICS[i % 3]} {' '.join(rng.sample(WORDS, 6))} ({i})", "label": LABELS[i % 3]})
    return rows


def label_reply(messages: list[dict]) -> str:
    """A teacher that answers the right label (by the topic words in the last user turn)."""
    text = messages[-1]["content"]
    return next(label for label, words in zip(LABELS, ("arrived", "exchange", "pin")) if words in text)


def write_intents(folder: Path, student: Path, url: str, *, test_rows: list[dict], **sections) -> Path:
    train = intent_rows(24)
    write_jsonl(folder / "train.jsonl", train)
    write_jsonl(folder / "validation.jsonl", intent_rows(3, 100))
    write_jsonl(folder / "test.jsonl", test_rows)
    spec = {"name": "intents", "task_type": "classification", "labels": LABELS,
            "teacher": {"backend": "openai", "model": "t", "base_url": url},
            "student": {"model": str(student)},
            "training_data": "train.jsonl", "validation_data": "validation.jsonl", "test_data": "test.jsonl",
            "hyperparameters": {"learning_rate": 1e-3, "batch_size": 4, "num_epochs": 1},
            "generation": {"max_tokens": 8}, "evaluation": {"max_tokens": 8, "warmup": 0, "bootstrap_samples": 0,
                                                              "throughput": False, "uncached_examples": 0}}
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def repeated_test_rows() -> list[dict]:
    """Five training rows again (two of them re-typed: case, spacing, a trailing mark), and three new ones."""
    train = intent_rows(24)
    repeats = [dict(train[1]), dict(train[4]), dict(train[9]), dict(train[15]), dict(train[22])]
    repeats[0]["text"] = repeats[0]["text"].upper()
    repeats[1]["text"] = "  " + repeats[1]["text"].replace(" ", "  ") + "!"
    return repeats + intent_rows(3, 200)


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def generate_metrics(ws: Path) -> dict:
    shown = run_cli("jobs", "show", "intents", "--json", "--workspace", str(ws))
    return {s["stage"]: s["metrics"] for s in json.loads(shown.stdout)["stages"]}


def test_training_rows_repeated_in_the_test_file_are_dropped_and_said(tmp_path, tiny_models):
    with OpenAIServer(ServerConfig(reply=label_reply)) as server:
        job = write_intents(tmp_path, tiny_models["student"], server.url, test_rows=repeated_test_rows())
        result = run_cli("generate", str(job), "--workspace", str(tmp_path / "ws"))
        asked = server.stats()["requests"]
    assert result.returncode == 0, result.stderr
    assert "overlap: 5 training rows near-duplicate held-out rows (5 test" in flat(result.stderr)
    assert "dropped from training" in flat(result.stderr)
    assert asked == 24 - 5 + 3  # the dropped rows were never sent to the teacher
    synthetic = (tmp_path / "ws" / "jobs" / "intents" / "synthetic" / "train.jsonl").read_text().splitlines()
    ids = {json.loads(line)["id"] for line in synthetic}
    assert len(ids) == 19 and not ids & {"train-2", "train-5", "train-10", "train-16", "train-23"}
    data = generate_metrics(tmp_path / "ws")["prepare"]["data"]
    assert data["given"]["train"] == 24 and data["splits"]["train"]["rows"] == 19
    assert data["overlap"]["training_rows"] == 5 and data["overlap"]["action"] == "drop"
    assert data["overlap"]["examples"][0]["training"].endswith("train.jsonl, line 2")


def test_overlap_fail_stops_before_any_teacher_request(tmp_path, tiny_models):
    with OpenAIServer(ServerConfig(reply=label_reply)) as server:
        job = write_intents(tmp_path, tiny_models["student"], server.url, test_rows=repeated_test_rows(),
                            data={"overlap": "fail"})
        result = run_cli("run", str(job), "--workspace", str(tmp_path / "ws"))
        asked = server.stats()["requests"]
    assert result.returncode != 0 and asked == 0
    message = flat(result.stderr)
    assert "overlap: 5 training rows" in message and "nothing was sent to the teacher" in message
    assert "train.jsonl, line 2" in message and "test.jsonl, line 1" in message


def test_overlap_warn_keeps_the_rows_and_says_the_figures_are_inflated(tmp_path, tiny_models, caplog):
    from distilflow.jobspec import load_spec
    from distilflow.prepare import prepare_inputs

    job = write_intents(tmp_path, tiny_models["student"], "http://127.0.0.1:9/v1", test_rows=repeated_test_rows(),
                        data={"overlap": "warn"})
    inputs = prepare_inputs(load_spec(job))
    assert len(inputs.examples["train"]) == 24 and "prepared" not in inputs.data_hashes
    assert "5 training rows" in caplog.text and "held-out figures are inflated" in caplog.text
    assert inputs.summary()["data"]["overlap"]["by_split"] == {"test": 5}


def test_a_job_without_overlap_keeps_its_fingerprints(tmp_path, tiny_models):
    """The check adds nothing to the stage fingerprints when it finds nothing: finished jobs are not redone."""
    from distilflow.jobspec import load_spec
    from distilflow.pipeline.stages import stage_fingerprints
    from distilflow.prepare import prepare_inputs

    job = write_intents(tmp_path, tiny_models["student"], "http://127.0.0.1:9/v1", test_rows=intent_rows(4, 300))
    spec = load_spec(job)
    inputs = prepare_inputs(spec)
    assert set(inputs.data_hashes) == {"train", "validation", "test"}
    before = stage_fingerprints(spec, inputs.data_hashes)
    write_jsonl(tmp_path / "test.jsonl", repeated_test_rows())
    after = stage_fingerprints(spec, prepare_inputs(spec).data_hashes)
    assert after["generate"] != before["generate"]  # rows left training: the teacher stage's inputs changed
