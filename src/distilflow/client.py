"""The Python API: `Client(workspace=...)` or `Client.from_config()` (distilflow.yaml: workspace and model catalog)
with `jobs.*` and `models.*`, the same verbs as the CLI. A script written for Azure ML's distillation API runs with
`from distilflow import Client as MLClient, DistillationJob` as its only change (docs/azure-migration.md)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from distilflow.catalog import CONFIG_FILE, WorkspaceConfig, looks_like_a_name, workspace_root
from distilflow.errors import SpecError
from distilflow.jobs.store import TERMINAL_STATUSES, JobRecord, JobStore, RegisteredModel
from distilflow.results import EvaluationResults
from distilflow.jobspec import EvaluationSpec, JobSpec, describe_validation_error, evaluation_default, parse_spec
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
    teachers: list[dict[str, Any]] | None = None  # several teachers, each {name, model, ...}: see generation.combine
    student: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] | None = None
    generation: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    tune: dict[str, Any] | None = None  # what `jobs.tune` searches (ranges or choices per setting)
    labels: list[str] | None = None  # classification: the label set (else taken from the training rows)
    data: dict[str, Any] | None = None  # the data checks: overlap, near_duplicate_threshold, truncate
    inputs: dict[str, Any] | None = None  # training inputs written by the teacher (docs/inputs.md)
    output_model_name: str | None = None  # registered name of the distilled student (default STUDENT-distilled)

    def to_spec(self, base_dir: str | Path = ".", catalog: WorkspaceConfig | None = None) -> JobSpec:
        """The job spec; with a `catalog`, teacher_model / student_model may be its short names."""
        data = self.model_dump(exclude_none=True)
        teacher = dict(data.pop("teacher", {}))
        student = dict(data.pop("student", {}))
        if "teacher_model" in data:
            teacher["model"] = data.pop("teacher_model")
        if "student_model" in data:
            student["model"] = data.pop("student_model")
        if teacher or "teachers" not in data:
            data["teacher"] = teacher
        data["student"] = student
        if catalog is not None:
            data = catalog.resolve_job(data, Path(base_dir).resolve())
        return parse_spec(data, "DistillationJob", Path(base_dir).resolve(),
                          default_name=f"{self.task_type}-{time.strftime('%Y%m%d-%H%M%S')}")


class Jobs:
    def __init__(self, workspace: Workspace, catalog: WorkspaceConfig | None = None) -> None:
        self.workspace = workspace
        self.catalog = catalog

    @property
    def store(self) -> JobStore:
        return JobStore(self.workspace.db_path)

    def create_or_update(self, job: DistillationJob | JobSpec | dict[str, Any]) -> JobRecord:
        """Validate the job and its data, record it, and start it in a background process. Returns at once.
        A job that is running is refused (cancel it first) and nothing about it changes."""
        from distilflow.pipeline.start import launch_job

        return launch_job(self._spec(job), self.workspace)

    def run(self, job: DistillationJob | JobSpec | dict[str, Any]) -> JobRecord:
        """Run the job in this process until it ends (what `distilflow run` does)."""
        from distilflow.pipeline.runner import run_job

        spec = self._spec(job)
        record = run_job(spec, self.workspace)
        assert record is not None
        return record

    def tune(self, job: DistillationJob | JobSpec | dict[str, Any], trials: int | None = None,
             budget_minutes: float | None = None) -> dict[str, Any]:
        """Search the job's training settings (what `distilflow tune` does), in this process: the teacher stage runs
        once, each trial is scored on the validation set, the best settings go to best.yaml and only the chosen
        student is scored on the test set. Run it again to resume a search that was stopped. Returns the summary."""
        from distilflow.tune import tune_job

        return tune_job(self._spec(job), self.workspace, trials=trials, budget_minutes=budget_minutes)

    def get(self, name: str) -> JobRecord:
        """The job: its status (which also equals Azure ML's spelling: "Completed"), stages and registered models."""
        return self.store.get(name)

    def list(self) -> list[JobRecord]:
        return self.store.list()

    def cancel(self, name: str) -> JobRecord:
        """Stop the job; returns once its processes have exited. `run` resumes it later."""
        from distilflow.pipeline.cancel import cancel_job

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

    def _spec(self, job: DistillationJob | JobSpec | dict[str, Any]) -> JobSpec:
        if isinstance(job, JobSpec):
            return job
        if isinstance(job, dict):
            try:
                job = DistillationJob.model_validate(job)
            except ValidationError as error:
                raise SpecError(describe_validation_error(error, DistillationJob, "DistillationJob")) from None
        return job.to_spec(catalog=self.catalog)


class Models:
    """Score models without a job; the settings are those of a job spec's `evaluation:` section, and so are their
    defaults (read from it, never restated). `batch_size` is the old spelling of `throughput_batch_size`."""

    def __init__(self, workspace: Workspace, catalog: WorkspaceConfig | None = None) -> None:
        self.workspace = workspace
        self.catalog = catalog

    def evaluate(self, model_name: str, test_data: str, task_type: str | None = None,
                 metrics: list[str] | None = None, max_tokens: int = evaluation_default("max_tokens"),
                 max_examples: int | None = evaluation_default("max_examples"),
                 device: str = evaluation_default("device"), *, base_url: str | None = None,
                 api_key_env: str | None = None,
                 throughput_batch_size: int = evaluation_default("throughput_batch_size"),
                 warmup: int = evaluation_default("warmup"),
                 bootstrap_samples: int = evaluation_default("bootstrap_samples"),
                 batch_size: int | None = None) -> EvaluationResults:
        """Score a model on a test file without a job; returns its figures (only those in `metrics`, when given),
        by distilflow's names or Azure ML's: results["bleu"], results["accuracy"], results.inference_time.

        `model_name` is a registered model ("phi-4-mini-distilled": a job that will register it is waited for), a
        catalog name (distilflow.yaml), an HF id, a local folder or a .gguf file; with `base_url` (and `api_key_env`,
        the NAME of the variable holding the key) it is the model name at an OpenAI-compatible endpoint.
        `task_type` defaults to the registering job's task, else conversation."""
        from distilflow.compare import evaluate_model

        target, job_task = self._target(model_name, base_url, api_key_env)
        settings = self._settings(batch_size, max_tokens=max_tokens, max_examples=max_examples, device=device,
                                  throughput_batch_size=throughput_batch_size, warmup=warmup,
                                  bootstrap_samples=bootstrap_samples)
        return EvaluationResults(evaluate_model(self.workspace, target, test_data, task_type or job_task or
                                                "conversation", metrics=metrics, settings=settings))

    def export(self, job: str, format: str = "hf", quantize: str | None = None, out: str | Path | None = None) -> Path:
        """Ship job `job`'s distilled student: `format` "hf" (a merged folder with a model card, README.md) or "gguf"
        (one file for llama.cpp; `quantize` f16 | q8_0 | q4_1 | q4_0). Returns what was written (default: the job's
        export/ folder)."""
        from distilflow.export import export_job

        return export_job(self.workspace, job, format, quantize, out)  # type: ignore[arg-type]

    def list(self) -> list[RegisteredModel]:
        """The models completed jobs registered, with the job and the report each came from (oldest first)."""
        return JobStore(self.workspace.db_path).registered_models()

    def _target(self, name: str, base_url: str | None,
                api_key_env: str | None) -> tuple[str | dict[str, Any], str | None]:
        """What `name` is, and the task of the job that registered it: a registered model first, then a catalog
        name, else the name itself (an HF id, a path, or the model at `base_url`)."""
        from distilflow.jobs.registry import find_model

        if base_url or api_key_env:
            return {"model": name, "base_url": base_url, "api_key_env": api_key_env}, None
        if looks_like_a_name(name):
            found = find_model(JobStore(self.workspace.db_path), name)
            if found is not None:
                return {"model": found.path, "label": found.name}, found.task_type
            target = self.catalog.evaluation_target(name) if self.catalog is not None else None
            if target is not None:
                return target, None
            if self.catalog is not None:
                raise self.catalog.unknown(name)
        return name, None

    def compare(self, models: list[str | dict[str, Any]], test_data: str, task_type: str = "conversation",
                max_tokens: int = evaluation_default("max_tokens"),
                max_examples: int | None = evaluation_default("max_examples"),
                device: str = evaluation_default("device"), *,
                throughput_batch_size: int = evaluation_default("throughput_batch_size"),
                warmup: int = evaluation_default("warmup"),
                bootstrap_samples: int = evaluation_default("bootstrap_samples"),
                batch_size: int | None = None) -> dict[str, Any]:
        """Score several models on the same inputs and compare each with the first; writes an HTML report.

        Each model is a string (HF id, folder, .gguf) or a dict {"model", "base_url", "api_key_env", "label"}."""
        from distilflow.compare import compare_models

        settings = self._settings(batch_size, max_tokens=max_tokens, max_examples=max_examples, device=device,
                                  throughput_batch_size=throughput_batch_size, warmup=warmup,
                                  bootstrap_samples=bootstrap_samples)
        return compare_models(self.workspace, models, test_data, task_type, settings=settings)

    @staticmethod
    def _settings(batch_size: int | None, **values: Any) -> EvaluationSpec:
        """The settings; `batch_size` (the old spelling) counts unless throughput_batch_size says otherwise."""
        if batch_size is not None:
            if values["throughput_batch_size"] not in (batch_size, evaluation_default("throughput_batch_size")):
                raise SpecError("evaluation settings: give throughput_batch_size or its old spelling batch_size, "
                                "not both")
            values["throughput_batch_size"] = batch_size
        try:
            return EvaluationSpec(**values)
        except ValidationError as error:  # a bad value (batch_size=0) is one sentence, like in a job spec
            raise SpecError(describe_validation_error(error, EvaluationSpec, "evaluation settings")) from None


class Client:
    """`workspace`: where jobs live (else $DISTILFLOW_HOME, else the config's `workspace:`, else ./distilflow-runs).
    `config`: a loaded distilflow.yaml, whose model catalog lets jobs and evaluations name models by short names."""

    def __init__(self, workspace: str | Path | None = None, *, config: WorkspaceConfig | None = None) -> None:
        self.config = config
        self.workspace = Workspace(workspace_root(workspace, config))
        self.jobs = Jobs(self.workspace, config)
        self.models = Models(self.workspace, config)

    def ui(self, *, host: str = "127.0.0.1", port: int | None = None, token: str | None = None,
           announce: Callable[[str], None] = print) -> None:
        """Serve the dashboard over this workspace until interrupted (what `distilflow ui` does; port None: 8765).
        Off loopback every request needs `token` (a new one is printed when None); see docs/ui.md."""
        from distilflow.ui import serve_ui

        serve_ui(self.workspace, host=host, port=port, token=token, announce=announce)

    @classmethod
    def from_config(cls, path: str | Path | None = None) -> "Client":
        """A client for the workspace and model catalog of distilflow.yaml, found like Azure ML's config.json: at
        `path` (a file, or a folder holding one), else $DISTILFLOW_CONFIG, else in the current folder or a parent."""
        if path is not None and Path(path).is_dir():
            path = Path(path) / CONFIG_FILE
        return cls(config=WorkspaceConfig.find(path, required=True))
