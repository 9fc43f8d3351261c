"""What one evaluation worker is told: which model (a local one, or one behind an OpenAI-compatible endpoint),
the test inputs, and the settings every model of a comparison shares (the job spec's `evaluation:` section).
A job's evaluate stage and `compare` build it the same way, with `worker_config`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from distilflow.errors import DistilflowError
from distilflow.fingerprint import digest
from distilflow.models import Message, model_revision
from distilflow.jobspec import (Dtype, EvaluationSpec, PromptFormat, TeacherSpec, describe_validation_error,
                                fingerprint_spelling)
from distilflow.tasks import Example
from distilflow.workspace import METRICS_FILE, PREDICTIONS_FILE

# Keys of a model given as a dict that make it a model behind an endpoint (the rest are TeacherSpec's fields).
_ENDPOINT_KEYS = ("base_url", "api_key_env", "api_version")


class ModelTarget(BaseModel):
    """A model to evaluate: a local model (HF id, folder, .gguf), a model behind an OpenAI-compatible endpoint
    (`endpoint`: the openai fields of a TeacherSpec), or a teacher's recorded answers."""

    model_config = ConfigDict(extra="forbid")

    model: str
    kind: Literal["local", "api", "recorded"] = "local"
    dtype: Dtype = "auto"
    prompt_format: PromptFormat = "chat"  # how the model reads its prompt (models/prompts.py)
    choices: list[str] = []  # answer by ranking these labels (answer_mode rank); empty: generate
    # Added to each label's score before the best is taken: a calibrated teacher (generation.calibration) is scored
    # with the labels it taught. Empty: none.
    label_offsets: list[float] = []
    endpoint: TeacherSpec | None = None
    # Names the endpoint's settings in error messages: "teacher" in a job (teacher.base_url), None on its own.
    endpoint_section: str | None = None

    @model_validator(mode="after")
    def _endpoint_for_api_only(self) -> "ModelTarget":
        if (self.kind == "api") != (self.endpoint is not None):
            raise ValueError("a model behind an endpoint (kind 'api') needs its endpoint, and only it has one")
        return self

    @classmethod
    def served(cls, endpoint: TeacherSpec, section: str | None) -> "ModelTarget":
        # A teacher spread over several endpoints is timed at its first: latency figures are one endpoint's.
        endpoint = endpoint.endpoints()[0]
        return cls(model=endpoint.model, kind="api", endpoint=endpoint, endpoint_section=section)

    @classmethod
    def parse(cls, value: str | dict[str, Any]) -> tuple[str | None, "ModelTarget"]:
        """(label, target) of a model given as a string, or as a dict {model, label, base_url, api_key_env, ...}."""
        fields = {"model": value} if isinstance(value, str) else {k: v for k, v in value.items() if v is not None}
        if "model" not in fields:
            raise DistilflowError(f"a model to evaluate needs a 'model' key (got {sorted(fields)})")
        label = fields.pop("label", None)
        served = any(fields.get(k) for k in _ENDPOINT_KEYS)
        schema: type[BaseModel] = TeacherSpec if served else cls
        try:
            if served:
                return label, cls.served(TeacherSpec.model_validate({"backend": "openai", **fields}), None)
            return label, cls.model_validate(fields)
        except ValidationError as error:
            raise DistilflowError(describe_validation_error(error, schema, f"model {fields['model']}")) from None


class TestExample(BaseModel):
    """One test input as the worker needs it (no provenance: the file was read and checked by prepare)."""

    __test__ = False  # not a pytest test class, whatever its name

    id: str
    messages: list[Message]
    reference: Any = None


class WorkerConfig(ModelTarget):
    """Everything one worker process needs, written as JSON for `python -m distilflow.evaluate.worker`."""

    label: str
    task_type: str
    labels: list[str] = []  # a classification task's label set (answers are scored against it)
    task_options: dict[str, Any] = {}  # the task's own spec keys (Task.spec_options: an extraction task's schema)
    examples: list[TestExample]
    settings: EvaluationSpec
    output_dir: str
    # The crash-safe answer cache of an API model (a job's teacher cache; a workspace's for `compare`).
    cache_path: str | None = None
    fingerprint: str | None = None

    @property
    def metrics_path(self) -> Path:
        return Path(self.output_dir) / METRICS_FILE

    @property
    def predictions_path(self) -> Path:
        return Path(self.output_dir) / PREDICTIONS_FILE

    def described(self) -> dict[str, Any]:
        """How the model was evaluated, as recorded in its metrics.json (the key's variable NAME, never a key); the
        measure loop adds the throughput_batch_size it ran at."""
        endpoint = self.endpoint
        values = {"base_url": endpoint.base_url if endpoint else None,
                  "api_key_env": endpoint.api_key_env if endpoint else None,
                  "max_tokens": self.settings.max_tokens, "warmup": self.settings.warmup}
        return {key: value for key, value in values.items() if value is not None}

    def with_fingerprint(self) -> "WorkerConfig":
        """What the results depend on: the model (and its weights' revision), the inputs and the measuring
        settings; the report's settings (which models, how many examples shown) and the folder do not count."""
        parts = self.model_dump(mode="json", exclude={"fingerprint": True, "output_dir": True, "cache_path": True,
                                                      "settings": {"models", "examples_in_report", "max_examples",
                                                                   "judge"}})
        parts["settings"] = fingerprint_spelling("evaluation", parts["settings"])  # old runs' results stay reusable
        for key in ("task_options", "label_offsets"):  # unused: the fingerprint it always had
            if not parts[key]:
                del parts[key]
        if parts.get("endpoint") and parts["endpoint"].get("context_length") is None:  # (a later teacher key: unset,
            parts["endpoint"].pop("context_length", None)  # the fingerprint results always had)
        return self.model_copy(update={"fingerprint": digest([parts, model_revision(self.model)])})


def worker_config(label: str, target: ModelTarget, *, task_type: str, examples: list[Example],
                  settings: EvaluationSpec, output_dir: Path, cache_path: Path | None = None,
                  labels: list[str] | None = None, task_options: dict[str, Any] | None = None) -> WorkerConfig:
    return WorkerConfig(**dict(target), label=label, task_type=task_type, settings=settings, labels=labels or [],
                        task_options=task_options or {},
                        output_dir=str(output_dir), cache_path=str(cache_path) if cache_path else None,
                        examples=[TestExample(id=e.id, messages=e.messages, reference=e.reference) for e in examples])


def progress_steps(examples: int, settings: EvaluationSpec) -> int:
    """Progress steps of one model: each answer at batch size 1, then again in the throughput run."""
    return examples * (2 if settings.throughput else 1)
