"""Shared fixtures: tiny random models built from a config (no network), data files, and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tiny_models import build_constant_model, build_pair

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """A 4-layer teacher and a 2-layer student sharing a locally trained tokenizer with a chat template."""
    root = tmp_path_factory.mktemp("tiny-models")
    teacher, student = build_pair(root)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(teacher)
    nli_teacher = build_constant_model(root / "nli-teacher", tokenizer, " entailment")
    return {"teacher": teacher, "student": student, "nli_teacher": nli_teacher, "root": root}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DISTILFLOW_CACHE", str(tmp_path_factory.getbasetemp() / "distilflow-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("DISTILFLOW_HOME", raising=False)
    monkeypatch.delenv("DISTILFLOW_CONFIG", raising=False)


def task_scores(task, predictions: list[str], references: list[Any]) -> dict[str, float]:
    """Every metric of a task on these predictions (the values the worker reports, without intervals)."""
    return {name: stats.value() for name, stats in task.metric_stats(predictions, references).items()}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def conversation_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    return [{"messages": [{"role": "user", "content": f"Hello number {i}, how are you?"},
                          {"role": "assistant", "content": f"I am fine, thanks {i}."}]} for i in range(offset, offset + n)]


def nli_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    labels = ["entailment", "neutral", "contradiction"]
    return [{"premise": f"A man number {i} is playing a guitar.", "hypothesis": f"A person {i} makes music.",
             "label": labels[i % 3]} for i in range(offset, offset + n)]


def write_job(folder: Path, models: dict[str, Path], *, task_type: str = "conversation", rows=conversation_rows,
              n_train: int = 8, n_val: int = 2, n_test: int = 2, name: str | None = None, **sections: Any) -> Path:
    """Data files plus a job spec in the form of the README's job spec reference; `sections` override or add spec keys."""
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "data" / "train.jsonl", rows(n_train))
    if n_val:
        write_jsonl(folder / "data" / "validation.jsonl", rows(n_val, offset=100))
    write_jsonl(folder / "data" / "test.jsonl", rows(n_test, offset=200))
    spec: dict[str, Any] = {
        "task_type": task_type,
        "teacher": {"model": str(models["teacher"]), "backend": "hf"},
        "student": {"model": str(models["student"])},
        "training_data": "data/train.jsonl",
        "validation_data": "data/validation.jsonl",
        "test_data": "data/test.jsonl",
        "hyperparameters": {"learning_rate": 1e-3, "batch_size": 2, "num_epochs": 1, "temperature": 0.7},
        "generation": {"max_tokens": 8},
        "evaluation": {"max_tokens": 8, "warmup": 0},
        # The helpers' rows are numbered copies of one template (and n_train >= 100 reaches the validation and test
        # offsets): near-duplicates by design, kept in training here. test_data_checks.py tests data.overlap.
        "data": {"overlap": "warn"},
    }
    if not n_val:
        del spec["validation_data"]
    if name:
        spec["name"] = name
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 600, **popen: Any) -> subprocess.CompletedProcess:
    """`distilflow ARGS` in a fresh process, exactly as a user runs it."""
    return subprocess.run([sys.executable, "-m", "distilflow", *args], capture_output=True, text=True,
                          timeout=timeout, env=cli_env(), **popen)


def start_cli(*args: str, **popen: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "distilflow", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=cli_env(), **popen)
