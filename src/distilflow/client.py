"""The Python API: `Client(workspace=...)` with `jobs.*` and `models.*`, the same verbs as the CLI."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from distilflow.errors import SpecError
from distilflow.jobs.store import TERMINAL_STATUSES, JobRecord, JobStore
from distilflow.spec import EvaluationSpec, JobSpec, describe_validation_error, parse_spec
from distilflow.workspace import Workspace


class DistillationJob(BaseModel):
    """A job in the flat form of the seed API; `teacher`/`student` hold further backend options."""

    model_config = ConfigDict(extra="forbid")

    teacher_model: str | None = None
    student_model: str | None = None
    training_data: str
    task_type: str
    name: str | None = None
    validation_data: str | None = None
    test_data: str | None = None
    teacher: dict[str, Any] | None = None
    student: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] | None = None
    generation: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None

    def to_spec(self, base_dir: str | Path = ".") -> JobSpec:
        data = self.model_dump(exclude_none=True)
        teacher = dict(data.pop("teacher", {}))
        student = dict(data.pop("student", {}))
        if "teacher_model" in data:
            teacher["model"] = data.pop("teacher_model")
        if "student_model" in data:
            student["model"] = data.pop("student_model")
        data["teacher"], data["student"] = teacher, student
        return parse_spec(data, "DistillationJob", Path(base_dir).resolve(),
                          default_name=f"{self.task_type}-{time.strftime('%Y%m%d-%H%M%S')}")


class Jobs:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    @property
    def store(self) -> JobStore:
        return JobStore(self.workspace.db_path)

    def create_or_update(self, job: DistillationJob | JobSpec | dict[str, Any]) -> JobRecord:
        """Validate the job and its data, record it, and start it in a background process. Returns at once.
        A job that is running is refused (cancel it first) and nothing about it changes."""
        from distilflow.jobs.control import launch_job

        return launch_job(self._spec(job), self.workspace)

    def run(self, job: DistillationJob | JobSpec | dict[str, Any]) -> JobRecord:
        """Run the job in this process until it ends (what `distilflow run` does)."""
        from distilflow.jobs.runner import run_job

        spec = self._spec(job)
        record = run_job(spec, self.workspace)
        assert record is not None
        return record

    def get(self, name: str) -> JobRecord:
        return self.store.get(name)

    def list(self) -> list[JobRecord]:
        return self.store.list()

    def cancel(self, name: str) -> JobRecord:
        """Stop the job; returns once its processes have exited. `run` resumes it later."""
        from distilflow.jobs.control import cancel_job

        return cancel_job(self.workspace, name)

    def stream(self, name: str, poll_seconds: float = 1.0, timeout: float | None = None) -> Iterator[JobRecord]:
        """Yield the job each time its status or progress changes, until it ends."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last: tuple | None = None
        while True:
            record = self.get(name)
            snapshot = (record.status, tuple((s.stage, s.status, s.done, s.total, s.message) for s in record.stages))
            if snapshot != last:
                last = snapshot
                yield record
            if record.status in TERMINAL_STATUSES:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {name!r} still {record.status} after {timeout} s")
            time.sleep(poll_seconds)

    def wait(self, name: str, timeout: float | None = None) -> JobRecord:
        record = None
        for record in self.stream(name, timeout=timeout):
            pass
        assert record is not None
        return record

    @staticmethod
    def _spec(job: DistillationJob | JobSpec | dict[str, Any]) -> JobSpec:
        if isinstance(job, JobSpec):
            return job
        if isinstance(job, dict):
            try:
                job = DistillationJob.model_validate(job)
            except ValidationError as error:
                raise SpecError(describe_validation_error(error, DistillationJob, "DistillationJob")) from None
        return job.to_spec()


class Models:
    """Score models without a job; the settings are those of a job spec's `evaluation:` section."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def evaluate(self, model_name: str, test_data: str, task_type: str = "conversation",
                 metrics: list[str] | None = None, max_tokens: int = 128, max_examples: int | None = None,
                 device: str = "auto", *, base_url: str | None = None, api_key_env: str | None = None,
                 batch_size: int = 8, warmup: int = 1, bootstrap_samples: int = 1000) -> dict[str, Any]:
        """Score any model on a test file without a job; returns the metrics (filtered by `metrics`).

        `model_name` is an HF id, a local folder or a .gguf file; with `base_url` (and `api_key_env`, the NAME
        of the variable holding the key) it is the model name at an OpenAI-compatible endpoint."""
        from distilflow.compare import evaluate_model

        target = {"model": model_name, "base_url": base_url, "api_key_env": api_key_env}
        settings = self._settings(max_tokens=max_tokens, max_examples=max_examples, device=device,
                                  batch_size=batch_size, warmup=warmup, bootstrap_samples=bootstrap_samples)
        return evaluate_model(self.workspace, target, test_data, task_type, metrics=metrics, settings=settings)

    def compare(self, models: list[str | dict[str, Any]], test_data: str, task_type: str = "conversation",
                max_tokens: int = 128, max_examples: int | None = None, device: str = "auto", *,
                batch_size: int = 8, warmup: int = 1, bootstrap_samples: int = 1000) -> dict[str, Any]:
        """Score several models on the same inputs and compare each with the first; writes an HTML report.

        Each model is a string (HF id, folder, .gguf) or a dict {"model", "base_url", "api_key_env", "label"}."""
        from distilflow.compare import compare_models

        settings = self._settings(max_tokens=max_tokens, max_examples=max_examples, device=device,
                                  batch_size=batch_size, warmup=warmup, bootstrap_samples=bootstrap_samples)
        return compare_models(self.workspace, models, test_data, task_type, settings=settings)

    @staticmethod
    def _settings(**values: Any) -> EvaluationSpec:
        try:
            return EvaluationSpec(**values)
        except ValidationError as error:  # a bad value (batch_size=0) is one sentence, like in a job spec
            raise SpecError(describe_validation_error(error, EvaluationSpec, "evaluation settings")) from None


class Client:
    def __init__(self, workspace: str | Path | None = None) -> None:
        self.workspace = Workspace.open(workspace)
        self.jobs = Jobs(self.workspace)
        self.models = Models(self.workspace)
