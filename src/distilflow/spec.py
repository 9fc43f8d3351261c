"""The job spec: pydantic models, YAML loading, path resolution and readable errors.

Every section forbids unknown keys; a misspelt key is reported with the nearest valid name.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distilflow.errors import SpecError
from distilflow.secrets import check_env_name, check_plain_header, check_url, read_env_secret

# The one list of each name; everything else reads these.
TASK_TYPES = ("nli", "conversation", "qa", "math", "summarization")
TaskType = Literal[TASK_TYPES]  # type: ignore[valid-type]
TRAINING_METHODS = ("sft", "kd", "sparse_kd", "on_policy")
MODEL_LABELS = ("teacher", "baseline", "distilled")  # the models a job evaluates, in report order
ModelLabel = Literal[MODEL_LABELS]  # type: ignore[valid-type]
JOB_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class _Section(BaseModel):
    # allow_inf_nan=False: `learning_rate: .inf` or `nan` is an error here, not a loss of 0.0000 after the teacher
    # was paid.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class EnvRef(_Section):
    """A value read from an environment variable when it is needed, never stored: `{env: MY_TOKEN}`."""

    env: str

    @field_validator("env")
    @classmethod
    def _a_name(cls, value: str) -> str:
        return check_env_name(value, "env")

    def resolve(self, what: str) -> str:
        return read_env_secret(self.env, what)


DTYPES = ("auto", "float32", "bfloat16", "float16")
Dtype = Literal[DTYPES]  # type: ignore[valid-type]
# transformers' schedulers that need no extra arguments (others would fail at training time, after the teacher).
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt")


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise ValueError("must be auto, cpu, mps, cuda or cuda:N")
    return value


Device = Annotated[str, AfterValidator(_device)]


class TeacherSpec(_Section):
    model: str = Field(description="Model name at the endpoint, HF hub id, local directory or .gguf path")
    backend: Literal["hf", "openai", "vllm", "recorded"] = "hf"
    # OpenAI-compatible endpoints (hosted APIs, Azure OpenAI, vLLM/SGLang/llama.cpp/Ollama servers)
    base_url: str | None = None
    api_key_env: str | None = Field(None, description="NAME of the environment variable holding the key")
    api_version: str | None = Field(None, description="Azure OpenAI api-version; selects the Azure client")
    headers: dict[str, str | EnvRef] = Field(default_factory=dict, description="credentials as {env: NAME}")
    max_concurrency: int = Field(16, ge=1)
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    max_retries: int = Field(6, ge=0)
    timeout: float = Field(120.0, gt=0)
    price_per_million_input_tokens: float | None = Field(None, ge=0)
    price_per_million_output_tokens: float | None = Field(None, ge=0)
    # Local models (hf / vllm)
    dtype: Dtype = "auto"
    device: Device = "auto"
    batch_size: int = Field(8, ge=1, description="Prompts per generate() call for a local teacher")
    # Recorded completions
    path: str | None = Field(None, description="JSONL of recorded prompt/response pairs (backend: recorded)")

    def cost_usd(self, prompt_tokens: float, completion_tokens: float) -> float | None:
        """Dollars for these tokens at this teacher's prices (None when no price is given)."""
        if self.price_per_million_input_tokens is None and self.price_per_million_output_tokens is None:
            return None
        return (prompt_tokens * (self.price_per_million_input_tokens or 0.0)
                + completion_tokens * (self.price_per_million_output_tokens or 0.0)) / 1e6

    @field_validator("api_key_env")
    @classmethod
    def _looks_like_a_name(cls, value: str | None) -> str | None:
        # Guard against a key pasted where its variable NAME belongs; never echo the value back.
        return None if value is None else check_env_name(value, "api_key_env")

    @field_validator("headers")
    @classmethod
    def _no_stored_credentials(cls, value: dict[str, str | EnvRef]) -> dict[str, str | EnvRef]:
        for name, header in value.items():
            if isinstance(header, str):
                check_plain_header(name, header)
        return value

    @field_validator("base_url")
    @classmethod
    def _no_credentials_in_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_url(value, "base_url")
        return value

    def resolved_headers(self) -> dict[str, str]:
        """Header values for a request: {env: NAME} references read from the environment now."""
        return {name: value.resolve(f"teacher.headers.{name}") if isinstance(value, EnvRef) else value
                for name, value in self.headers.items()}


class PruneRule(_Section):
    every: int = Field(ge=1, description="keep every k-th layer")
    keep_last: bool = True


class StudentSpec(_Section):
    model: str
    prune: list[int] | PruneRule | None = Field(None, description="layers of `model` to keep (depth pruning)")
    dtype: Dtype = "auto"


class Hyperparameters(_Section):
    """The seed API's flat hyperparameters, accepted as is."""

    learning_rate: float = Field(2.0e-5, gt=0, le=1)
    batch_size: int = Field(2, ge=1)
    num_epochs: float = Field(3, gt=0)
    temperature: float = Field(0.0, ge=0, description="teacher sampling temperature; 0 is greedy")


class GenerationSpec(_Section):
    max_tokens: int = Field(256, ge=1)
    temperature: float | None = Field(None, ge=0, description="overrides hyperparameters.temperature")
    top_p: float = Field(1.0, gt=0, le=1)
    num_samples: int = Field(1, ge=1)
    seed: int | None = 0
    stop: list[str] = Field(default_factory=list)
    top_logprobs: int = Field(0, ge=0, le=20)
    system_prompt: str | None = None
    teacher_prompt: str | None = Field(
        None, description="instructions/few-shot examples shown to the teacher only, before the input"
    )
    verify: Literal["reference", "majority", "none"] = "reference"
    min_success_ratio: float = Field(0.9, ge=0, le=1)
    deduplicate: bool = True
    max_examples: int | None = Field(None, ge=1, description="use only the first N rows of each data file")


class LoraSpec(_Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | str = "all-linear"
    merge: bool = True


LayerPairs = Literal["auto"] | list[Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=2, max_length=2)]]


class HiddenStatesSpec(_Section):
    """Intermediate-layer matching: the student's layer outputs pulled towards the teacher's (local teacher)."""

    weight: float = Field(1.0, ge=0)
    layers: LayerPairs = Field("auto", description="[[student_layer, teacher_layer], ...] or auto")
    loss: Literal["mse", "cosine"] = "mse"


class AttentionSpec(_Section):
    """Attention transfer: KL between the attention distributions of mapped layers, on answer positions."""

    weight: float = Field(1.0, ge=0)
    layers: LayerPairs = Field("auto", description="[[student_layer, teacher_layer], ...] or auto")


class TrainingSpec(_Section):
    method: Literal[TRAINING_METHODS] = "sft"  # type: ignore[valid-type]
    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
    kd_temperature: float = Field(1.0, gt=0)
    kd_alpha: float = Field(0.5, ge=0, le=1, description="weight of the divergence; 1 - alpha goes to cross-entropy")
    jsd_beta: float = Field(0.5, ge=0, le=1)
    loss_chunk_size: int = Field(1024, ge=1, description="tokens per chunk in memory-bounded losses")
    lora: LoraSpec | None = None
    max_seq_length: int = Field(1024, ge=8)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    save_steps: int = Field(50, ge=1)
    logging_steps: int = Field(5, ge=1)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: Literal[LR_SCHEDULERS] = "linear"  # type: ignore[valid-type]
    seed: int = 42
    packing: bool = False
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward: less memory, slower")
    device: Device = "auto"
    # on_policy: the student samples the answers of this share of each batch; the teacher scores them token by token
    on_policy_ratio: float = Field(0.5, ge=0, le=1, description="on_policy: share of each batch the student samples")
    student_temperature: float = Field(1.0, gt=0, description="on_policy: the student's sampling temperature")
    student_max_tokens: int = Field(256, ge=1, description="on_policy: new tokens per student sample")
    teacher_top_logprobs: int = Field(8, ge=1, le=20, description="on_policy with a served teacher: K per token")
    hidden_states: HiddenStatesSpec | None = None
    attention: AttentionSpec | None = None


class EvaluationSpec(_Section):
    max_tokens: int = Field(256, ge=1)
    max_examples: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1, description="batch size of the throughput measurement")
    warmup: int = Field(1, ge=0, description="answers generated and discarded before timing")
    models: list[ModelLabel] = Field(default_factory=lambda: list(MODEL_LABELS))
    device: Device = "auto"
    bootstrap_samples: int = Field(1000, ge=0)
    examples_in_report: int = Field(5, ge=0)
    bootstrap_seed: int = Field(0, description="seed of the bootstrap resampling (intervals are reproducible)")
    throughput: bool = Field(True, description="also time the test set at batch_size (answers/s, tokens/s)")


class JobSpec(_Section):
    name: str | None = None
    task_type: TaskType
    teacher: TeacherSpec
    student: StudentSpec
    training_data: str
    validation_data: str | None = None
    test_data: str | None = None
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        if value is not None and not JOB_NAME_PATTERN.fullmatch(value):
            raise ValueError("use letters, digits, '.', '_' and '-' only (at most 100), starting with a letter or digit")
        return value

    @model_validator(mode="after")
    def _backend_needs(self) -> "JobSpec":
        t = self.teacher
        if t.backend == "openai" and not t.base_url and not t.api_key_env:
            raise ValueError("teacher.backend openai needs teacher.base_url or teacher.api_key_env")
        if t.backend == "recorded" and not (t.path or t.model):
            raise ValueError("teacher.backend recorded needs teacher.path")
        return self

    # ----- derived values -------------------------------------------------------------------
    @property
    def teacher_temperature(self) -> float:
        g = self.generation.temperature
        return self.hyperparameters.temperature if g is None else g

    def data_files(self) -> dict[str, str]:
        """Split name -> path for the data files this spec names."""
        files = {"train": self.training_data}
        if self.validation_data:
            files["validation"] = self.validation_data
        if self.test_data:
            files["test"] = self.test_data
        return files

    def public_dict(self) -> dict[str, Any]:
        """The resolved spec as stored in the workspace (it holds no secrets by construction)."""
        return self.model_dump(mode="json", exclude_none=True)


# ----- loading -------------------------------------------------------------------------------

_PATH_FIELDS = ("training_data", "validation_data", "test_data")


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that owns the last element of `loc` (None if not a model)."""
    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = _first_model_in(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _first_model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model_in(arg)
        if found is not None:
            return found
    return None


def describe_validation_error(error: ValidationError, model: type[BaseModel], source: str) -> str:
    """One readable sentence per problem; unknown keys get a 'did you mean' suggestion."""
    problems: list[str] = []
    for item in error.errors():
        loc = tuple(item["loc"])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            owner = _model_at(model, loc)
            valid = list(owner.model_fields) if owner else []
            key = str(loc[-1])
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            prefix = "".join(f"{p}." for p in loc[:-1])
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            valid_list = f" (valid keys: {', '.join(valid)})" if valid and not close else ""
            problems.append(f"unknown key '{dotted}'{hint}{valid_list}")
        elif item["type"] == "missing":
            problems.append(f"missing required key '{dotted}'")
        else:
            # Never echo input values: a misplaced secret must not reach a terminal or log.
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"'{dotted}': {message}")
    return f"{source}: " + "; ".join(problems)


def _resolve_relative(value: str | None, base: Path) -> str | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _resolve_model_ref(value: str, base: Path) -> str:
    """A model given as a relative path that exists beside the spec becomes absolute; ids stay as they are."""
    if "://" in value or value.startswith("pkg:"):
        return value
    candidate = Path(value).expanduser()
    if not candidate.is_absolute():
        candidate = base / candidate
    return str(candidate.resolve()) if candidate.exists() else value


def resolve_paths(spec: JobSpec, base: Path) -> JobSpec:
    """Resolve data files and local model paths against `base` (the spec file's folder)."""
    updates: dict[str, Any] = {f: _resolve_relative(getattr(spec, f), base) for f in _PATH_FIELDS}
    spec = spec.model_copy(update=updates)
    spec.teacher = spec.teacher.model_copy(update={
        "model": _resolve_model_ref(spec.teacher.model, base),
        "path": _resolve_relative(spec.teacher.path, base),
    })
    spec.student = spec.student.model_copy(update={"model": _resolve_model_ref(spec.student.model, base)})
    return spec


def parse_spec(data: Any, source: str, base: Path, default_name: str | None = None) -> JobSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a job spec must be a mapping of keys to values")
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(describe_validation_error(error, JobSpec, source)) from None
    spec = resolve_paths(spec, base)
    if spec.name is None:
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", default_name or f"{spec.task_type}-job").strip("-._") or "job"
        spec.name = name[:100]
    return spec


def load_spec(path: str | Path) -> JobSpec:
    """Load a job spec from YAML; relative paths resolve against the spec file's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: job spec not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: cannot read the job spec ({error.__class__.__name__}: {error})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise SpecError(f"{path}{where}: {problem}") from None
    return parse_spec(data, str(path), path.resolve().parent, default_name=path.stem)


def dump_spec(spec: JobSpec) -> str:
    return yaml.safe_dump(spec.public_dict(), sort_keys=False, allow_unicode=True)
