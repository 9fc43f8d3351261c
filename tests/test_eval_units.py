"""The evaluation's building blocks without a model: the worker's pipes, the result schema and its file form,
prediction rows, model targets, and the shared OpenAI endpoint's wording and cost."""

from __future__ import annotations

import sys

import pytest

from distilflow.errors import DistilflowError, SpecError
from distilflow.evaluate.config import ModelTarget
from distilflow.evaluate.worker import run_process
from distilflow.models.openai import NO_KEY, EndpointError, OpenAIEndpoint
from distilflow.results import AnswerTiming, ModelResult, Prediction
from distilflow.jobspec import TeacherSpec

NOISY_WORKER = """
import json, sys
sys.stderr.write("warning: " + "x" * 200 + "\\n" * 1 + ("w" * 100 + "\\n") * 3000)  # ~300 KB, past any pipe buffer
sys.stderr.flush()
for i in range(3):
    print(json.dumps({"progress": i + 1, "total": 3}), flush=True)
print("error: the one sentence", file=sys.stderr)
sys.exit(2)
"""


def test_a_worker_that_writes_much_to_stderr_does_not_block_and_its_error_is_kept():
    seen = []
    status, stderr = run_process([sys.executable, "-c", NOISY_WORKER], lambda done, total: seen.append((done, total)))
    assert status == 2 and seen == [(1, 3), (2, 3), (3, 3)]
    assert stderr[-1] == "error: the one sentence"


def test_a_failing_progress_callback_stops_the_worker():
    def cancel(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_process([sys.executable, "-c", "import json, time\nprint(json.dumps({'progress': 1, 'total': 2}), "
                     "flush=True)\ntime.sleep(60)"], cancel)


def test_a_result_keeps_exactly_the_keys_it_was_given():
    api = ModelResult(label="teacher", model="m", kind="api", evaluated=True, latency_mean_s=0.5, peak_memory_mb=None,
                      network=True, task_metrics={"bleu": 10.0},
                      intervals={"bleu": {"value": 10.0, "low": 8.0, "high": 12.0, "n": 3, "samples": 100,
                                          "confidence": 0.95}})
    data = api.to_json()
    assert data["peak_memory_mb"] is None and "parameters" not in data  # null: not measurable; absent: not set
    assert ModelResult.of(data).to_json() == data  # a round trip through the file form changes nothing
    assert ModelResult.of({**data, "some_new_figure": 1}).to_json()["some_new_figure"] == 1
    assert api.has("peak_memory_mb") and not api.has("parameters")
    with pytest.raises(KeyError):
        api.has("peak_memory")  # a misspelt figure fails loudly
    assert api.flat()["bleu"] == 10.0 and "task_metrics" not in api.flat()
    not_evaluated = ModelResult.not_evaluated("teacher", "m", "why").to_json()
    assert not_evaluated == {"label": "teacher", "model": "m", "evaluated": False, "reason": "why"}


def test_a_metrics_file_of_an_older_version_reads_its_batch_size_as_throughput_batch_size(tmp_path):
    from distilflow.results import EvaluationResults

    old_file = tmp_path / "metrics.json"
    old_file.write_text('{"label": "teacher", "throughput_batch_size": 4, "batch_size": 4, "warmup": 1}')
    read = ModelResult.read(old_file)
    assert read is not None and read.throughput_batch_size == 4
    assert read.to_json() == {"label": "teacher", "throughput_batch_size": 4, "warmup": 1}  # one field left
    older = ModelResult.of({"label": "teacher", "batch_size": 2})  # a file with only the old key
    assert older.throughput_batch_size == 2 and older.has("throughput_batch_size")
    assert not ModelResult.of({"label": "teacher"}).has("throughput_batch_size")  # nothing made up
    results = EvaluationResults(older.flat())
    assert results["batch_size"] == results["throughput_batch_size"] == 2 and "batch_size" in results


def test_prediction_rows_have_timing_only_when_measured_here():
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
    timed = Prediction.of("test-1", messages, "a", ["r"], AnswerTiming(0.5, 0.1, 3)).to_json()
    assert timed == {"id": "test-1", "input": "q", "prediction": "a", "reference": ["r"], "latency_s": 0.5,
                     "ttft_s": 0.1, "output_tokens": 3}
    recorded = Prediction.of("test-1", messages, "a", None).to_json()
    assert recorded == {"id": "test-1", "input": "q", "prediction": "a", "reference": None}
    assert Prediction.from_json(timed).to_json() == timed


def test_model_targets_from_strings_and_dicts():
    assert ModelTarget.parse("some/model") == (None, ModelTarget(model="some/model"))
    label, served = ModelTarget.parse({"model": "m", "label": "big", "base_url": "http://127.0.0.1:9/v1",
                                       "api_key_env": "SOME_KEY", "api_version": None})
    assert label == "big" and served.kind == "api" and served.endpoint.base_url == "http://127.0.0.1:9/v1"
    with pytest.raises(DistilflowError, match="'model' key"):
        ModelTarget.parse({"label": "x"})
    with pytest.raises(DistilflowError, match="unknown key 'base_ur'"):
        ModelTarget.parse({"model": "m", "api_key_env": "K", "base_ur": "http://x"})


def test_one_wording_for_the_endpoint_errors(monkeypatch):
    spec = TeacherSpec(model="m", backend="openai", base_url="http://127.0.0.1:9/v1", api_key_env="EVAL_UNIT_KEY")
    monkeypatch.delenv("EVAL_UNIT_KEY", raising=False)
    with pytest.raises(SpecError, match="environment variable EVAL_UNIT_KEY is not set"):
        OpenAIEndpoint(spec).open_key()
    monkeypatch.setenv("EVAL_UNIT_KEY", "sk-unit-secret-123456")
    teacher, model = OpenAIEndpoint(spec, "teacher"), OpenAIEndpoint(spec, None)
    teacher.open_key()
    refused = teacher.refusal(401, None, "bad key sk-unit-secret-123456")
    assert isinstance(refused, EndpointError) and "refused the API key (401)" in str(refused)
    assert "sk-unit-secret-123456" not in str(refused) and "teacher.base_url" in str(refused)
    assert "404 for model 'm'" in str(model.refusal(404, None, "no such model"))
    assert "check model and base_url" in str(model.refusal(404, None, ""))
    assert model.refusal(500, None, "busy") is None  # worth a retry: not a refusal
    assert OpenAIEndpoint(TeacherSpec(model="m", backend="openai", base_url="http://x")).open_key() == NO_KEY
    with pytest.raises(SpecError, match="api_version selects Azure OpenAI"):
        OpenAIEndpoint(TeacherSpec(model="m", backend="openai", api_key_env="K", api_version="2024-10-21"))


def test_cost_of_1000_answers_uses_the_teacher_prices():
    priced = OpenAIEndpoint(TeacherSpec(model="m", backend="openai", base_url="http://x",
                                        price_per_million_input_tokens=2.0, price_per_million_output_tokens=8.0))
    assert priced.cost_per_1000_answers(300, 150, 3) == pytest.approx((300 * 2.0 + 150 * 8.0) / 1e6 / 3 * 1000)
    assert priced.cost_per_1000_answers(None, 150, 3) is None  # a priced count unknown: no cost, not a low one
    free = OpenAIEndpoint(TeacherSpec(model="m", backend="openai", base_url="http://x"))
    assert free.cost_per_1000_answers(300, 150, 3) is None
