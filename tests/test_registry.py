"""Registered models (NAME-distilled, NAME-baseline), the names models.evaluate takes, Azure ML's metric names and
job statuses. No model is loaded here: the end-to-end run is tests/test_azure_script.py."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from distilflow import Client
from distilflow.catalog import WorkspaceConfig
from distilflow.compare import wanted_keys
from distilflow.errors import DistilflowError, SpecError
from distilflow.jobs import registry
from distilflow.jobs.registry import find_model, output_model_names, register_outputs
from distilflow.jobs.store import JobStatus, JobStore
from distilflow.results import EvaluationResults
from distilflow.jobspec import JobSpec
from distilflow.tasks import get_task
from distilflow.workspace import Workspace


def spec(name="bot", **extra) -> JobSpec:
    data = {"name": name, "task_type": "nli", "teacher": {"model": "t"}, "training_data": "/x/train.jsonl",
            "student": {"model": "HuggingFaceTB/SmolLM2-135M-Instruct"}, **extra}
    return JobSpec.model_validate(data)


def recorded(workspace: Workspace, job: JobSpec) -> JobStore:
    store = JobStore(workspace.db_path)
    store.upsert_job(job.name, job.task_type, job.public_dict(), {})
    return store


def test_names_follow_the_student():
    assert output_model_names(spec()) == {"distilled": "SmolLM2-135M-Instruct-distilled",
                                          "baseline": "SmolLM2-135M-Instruct-baseline"}
    named = spec(student={"model": "/m/phi.Q4.gguf", "name": "phi-4-mini"}, output_model_name="support-bot")
    assert output_model_names(named) == {"distilled": "support-bot", "baseline": "phi-4-mini-baseline"}
    assert output_model_names(spec(student={"model": "/models/tiny student.gguf"}))["baseline"] == "tiny-student-baseline"


def test_a_completed_job_registers_its_students_and_a_rerun_takes_the_names(tmp_path):
    workspace = Workspace(tmp_path / "ws")
    first = spec("first")
    store = recorded(workspace, first)
    register_outputs(store, first, workspace.job("first"))
    client = Client(workspace=workspace.root)
    assert [(m.name, m.label, m.job) for m in client.models.list()] == [
        ("SmolLM2-135M-Instruct-baseline", "baseline", "first"), ("SmolLM2-135M-Instruct-distilled", "distilled", "first")]
    assert {m.path for m in client.jobs.get("first").models} == {
        "HuggingFaceTB/SmolLM2-135M-Instruct", str(workspace.job("first").student_final)}
    second = spec("second")
    register_outputs(recorded(workspace, second), second, workspace.job("second"))
    assert {m.job for m in client.models.list()} == {"second"} and client.jobs.get("first").models == []


class JobMovesOn:
    """The registry's poll wait (`time.sleep`), made the moment a job changes: the n-th wait runs the n-th step. A
    finder that did not wait would return before any step ran; one that did not read the job again would wait on."""

    def __init__(self, *steps) -> None:
        self.steps = list(steps)
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        assert self.steps, "find_model kept waiting after the job had ended"
        self.steps.pop(0)()

    def as_time_module(self) -> SimpleNamespace:
        """The `time` module with this sleep, for the registry alone (everything else waits as usual)."""
        return SimpleNamespace(**{**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")},
                                  "sleep": self.sleep})


def test_evaluating_a_name_a_running_job_will_register_waits_for_it(tmp_path, monkeypatch):
    workspace = Workspace(tmp_path / "ws")
    job = spec("pending", output_model_name="bot-v2")
    store = recorded(workspace, job)  # queued: submitted, not finished

    def finish() -> None:
        register_outputs(store, job, workspace.job("pending"))
        store.set_job_status("pending", "completed")

    clock = JobMovesOn(lambda: None, finish)  # still queued after the first wait; completed after the second
    monkeypatch.setattr(registry, "time", clock.as_time_module())
    found = find_model(store, "bot-v2")
    assert found is not None and found.job == "pending"
    assert clock.waits == [registry.POLL_SECONDS] * 2 and not clock.steps  # it waited until the job completed
    target, task = Client(workspace=workspace.root).models._target("bot-v2", None, None)
    assert target == {"model": str(workspace.job("pending").student_final), "label": "bot-v2"} and task == "nli"

    failing = spec("failing", output_model_name="bot-v3")
    recorded(workspace, failing)
    store.set_job_status("failing", "failed", error="the teacher refused every request")
    with pytest.raises(DistilflowError, match="'bot-v3' was not registered: job 'failing' failed \\(the teacher"):
        find_model(store, "bot-v3")  # not waited for: it ended; and no older model stands in for it
    store.upsert_job("failing", "nli", failing.public_dict(), {"generate": "changed"})
    store.set_job_status("failing", "queued")
    clock = JobMovesOn(lambda: store.set_job_status("failing", "failed", error="no quota"))
    monkeypatch.setattr(registry, "time", clock.as_time_module())
    with pytest.raises(DistilflowError, match="'bot-v3' was not registered: job 'failing' failed \\(no quota\\)"):
        find_model(store, "bot-v3")
    assert clock.waits == [registry.POLL_SECONDS]


def test_evaluate_takes_registered_then_catalog_names_then_paths(tmp_path):
    config_file = tmp_path / "distilflow.yaml"
    config_file.write_text("models:\n  judge: {backend: openai, model: gpt-x, base_url: 'http://h:1/v1'}\n"
                           "  small: {model: org/small, dtype: float32}\n")
    models = Client(tmp_path / "ws", config=WorkspaceConfig.load(config_file)).models
    target, task = models._target("judge", None, None)
    assert target["base_url"] == "http://h:1/v1" and target["model"] == "gpt-x" and target["label"] == "judge"
    assert models._target("small", None, None) == ({"model": "org/small", "dtype": "float32", "label": "small"}, None)
    assert models._target("org/other", None, None) == ("org/other", None)
    with pytest.raises(SpecError, match="unknown model 'smal'.*did you mean 'small'"):
        models._target("smal", None, None)
    assert models._target("smal", "http://h:2/v1", None)[0]["base_url"] == "http://h:2/v1"


def test_job_status_equals_azure_spelling():
    status = JobStatus("completed")
    assert status == "Completed" and "Completed" == status and status == "completed" and status != "Failed"
    assert status in ["Completed", "Failed", "Canceled"] and status in ("completed",)
    assert JobStatus("canceled") == "Cancelled" and JobStatus("queued") == "NotStarted"
    assert JobStatus("running") == "Running" and JobStatus("running") != "Completed"
    assert hash(status) == hash("completed") and str(status) == "completed" and {status: 1}["completed"] == 1


def test_results_read_azure_metric_names():
    flat = {"label": "m", "task_type": "conversation", "bleu": 12.5, "chrf": 30.0, "exact_match": 0.25,
            "latency_mean_s": 0.2, "scored_examples": 4,
            "intervals": {"exact_match": {"value": 0.25, "low": 0.0, "high": 0.75, "n": 4}}}
    results = EvaluationResults(flat)
    assert results["accuracy"] == 0.25 and results.accuracy == 0.25  # free text: exact match
    assert results["bleu_score"] == 12.5 and results["inference_time"] == 0.2 and results.bleu == 12.5
    assert "accuracy" in results and results.get("bleu_score") == 12.5 and results.get("rougeL") is None
    interval = results.interval("accuracy")
    assert interval is not None and (interval.low, interval.high, interval.n) == (0.0, 0.75, 4) and results.n == 4
    with pytest.raises(KeyError, match="'rougeL' is not in these results"):
        results["rougeL"]
    with pytest.raises(AttributeError):
        results.rouge1
    nli = EvaluationResults({"accuracy": 0.5, "exact_match": 0.1})
    assert nli["accuracy"] == 0.5  # a task's own accuracy comes first


def test_metric_names_are_checked_before_any_model_loads():
    assert wanted_keys(["accuracy", "bleu_score", "inference_time"], "conversation") == {
        "exact_match", "bleu", "latency_mean_s"}
    assert wanted_keys(["accuracy"], "nli") == {"accuracy"}
    with pytest.raises(DistilflowError, match="metric 'accuracy' is not measured for task summarization "
                                              r"\(supported: .*bleu_score.*inference_time.*rougeL"):
        wanted_keys(["accuracy"], "summarization")


def test_conversation_exact_match():
    task = get_task("conversation")
    stats = task.metric_stats(["I am fine, thanks 1.", "Something else"], [["i am fine thanks 1"], ["No."]])
    assert stats["exact_match"].value() == 0.5 and "exact_match" in task.metric_names
