"""The sections of a job spec (teacher, student, hyperparameters, generation, training, evaluation): pydantic
models that forbid unknown keys and non-finite numbers, and keep secrets out (a key is named, never given)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from distilflow.secrets import check_env_name, check_plain_header, check_url, read_env_secret
from distilflow.jobspec.names import (LR_SCHEDULERS, MODEL_LABELS, TRAINING_METHODS, AnswerMode, Calibration, Device, Dtype,
                                   FewShotOrder, ModelLabel, PromptFormat, check_name)

# No model has a longer context than this (the longest served in 2025 take about 1M tokens): a larger max_tokens is a
# typo, refused at load, before a dry run prints figures of trillions of tokens.
MAX_CONTEXT_TOKENS = 1_000_000


def check_max_tokens(value: int) -> int:
    if value > MAX_CONTEXT_TOKENS:
        raise ValueError(f"{value:,} tokens is more than any model's context ({MAX_CONTEXT_TOKENS:,} tokens); give "
                         f"the longest answer you want, e.g. 256")
    return value


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



class TeacherSpec(_Section):
    model: str = Field(description="Model name at the endpoint, HF hub id, local directory or .gguf path")
    backend: Literal["hf", "openai", "recorded"] = "hf"
    # OpenAI-compatible endpoints (hosted APIs, Azure OpenAI, vLLM/SGLang/llama.cpp/Ollama servers)
    # A list spreads the requests over several endpoints serving the same model (teachers/routing.py).
    base_url: str | list[str] | None = None
    api_key_env: str | None = Field(None, description="NAME of the environment variable holding the key")
    api_version: str | None = Field(None, description="Azure OpenAI api-version; selects the Azure client")
    headers: dict[str, str | EnvRef] = Field(default_factory=dict, description="credentials as {env: NAME}")
    max_concurrency: int = Field(16, ge=1, description="openai: requests in flight at once")
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    max_retries: int = Field(6, ge=0)
    max_consecutive_failures: int = Field(20, ge=1, description="failed requests in a row that end the stage")
    timeout: float = Field(120.0, gt=0)
    price_per_million_input_tokens: float | None = Field(None, ge=0)
    price_per_million_output_tokens: float | None = Field(None, ge=0)
    prompt_format: PromptFormat = Field("chat", description="chat template, or plain completion text")
    context_length: int | None = Field(None, ge=1, le=MAX_CONTEXT_TOKENS, description="the model's context in "
                                       "tokens (default: a local model's config.json; unknown for an API)")
    # Local models (hf)
    dtype: Dtype = "auto"
    device: Device = "auto"
    batch_size: int = Field(8, ge=1, description="hf: prompts per generate() call (openai: see max_concurrency)")
    # Recorded completions
    path: str | None = Field(None, description="JSONL of recorded prompt/response pairs (backend: recorded)")

    def cost_usd(self, prompt_tokens: float, completion_tokens: float) -> float | None:
        """Dollars for these tokens at this teacher's prices (None when no price is given)."""
        if self.price_per_million_input_tokens is None and self.price_per_million_output_tokens is None:
            return None
        return (prompt_tokens * (self.price_per_million_input_tokens or 0.0)
                + completion_tokens * (self.price_per_million_output_tokens or 0.0)) / 1e6

    @field_validator("backend", mode="before")
    @classmethod
    def _no_vllm_engine(cls, value: Any) -> Any:
        # An in-process vLLM engine needs a GPU build this project cannot test; vLLM's own server does the same job.
        if value == "vllm":
            raise ValueError("vllm runs as a server here: start `vllm serve MODEL`, then use backend: openai with "
                             "base_url: http://HOST:8000/v1")
        return value

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
    def _no_credentials_in_url(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            if not value:
                raise ValueError("give at least one URL (or leave base_url out)")
            if len(set(value)) != len(value):
                raise ValueError("lists the same URL twice")
            for i, url in enumerate(value):
                check_url(url, f"base_url[{i}]")
            return value[0] if len(value) == 1 else value
        if value is not None:
            check_url(value, "base_url")
        return value

    def endpoints(self) -> list["TeacherSpec"]:
        """This teacher once per base_url (each with one URL); itself when it has one URL or none. What serves one
        endpoint only (evaluation's timing, scoring) uses the first."""
        if not isinstance(self.base_url, list):
            return [self]
        return [self.model_copy(update={"base_url": url}) for url in self.base_url]

    def resolved_headers(self) -> dict[str, str]:
        """Header values for a request: {env: NAME} references read from the environment now."""
        return {name: value.resolve(f"teacher.headers.{name}") if isinstance(value, EnvRef) else value
                for name, value in self.headers.items()}


class RouteRule(_Section):
    """generation.combine route: the rows this teacher answers, by a field value of the data row or a regular
    expression searched in the input text."""

    field: str | None = Field(None, description="a field of the data row")
    values: list[str] = Field(default_factory=list, description="the field's values that pick this teacher")
    pattern: str | None = Field(None, description="a regular expression searched in the input's text")

    @model_validator(mode="after")
    def _one_rule(self) -> "RouteRule":
        if (self.field is None) == (self.pattern is None):
            raise ValueError("a route is either {field: NAME, values: [...]} or {pattern: REGEX}")
        if self.field is not None and not self.values:
            raise ValueError("a route by field needs the values that pick this teacher")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as error:
                raise ValueError(f"pattern is not a regular expression ({error})") from None
        return self


class TeamTeacherSpec(TeacherSpec):
    """One of several teachers (`teachers:`): a teacher section with a name, a weight and, for combine route, the
    rows it answers."""

    name: str = Field(description="the teacher's name in rows, metrics and the report")
    weight: float = Field(1.0, gt=0, description="its vote (combine vote) and its share of the kd mixture")
    route: RouteRule | None = Field(None, description="combine route: the rows it answers (none: every other row)")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return check_name(value) or value


class PruneRule(_Section):
    every: int = Field(ge=1, description="keep every k-th layer")
    keep_last: bool = True


class StudentSpec(_Section):
    model: str
    prune: list[int] | PruneRule | None = Field(None, description="layers of `model` to keep (depth pruning)")
    dtype: Dtype = "auto"
    prompt_format: PromptFormat = Field("chat", description="chat template, or plain completion text")
    # The short name outputs are registered under (NAME-distilled, NAME-baseline): the catalog name the student was
    # given by (distilflow.yaml), else the model's folder or file name.
    name: str | None = Field(None, description="short name of the student; names its registered outputs")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        return check_name(value)


class Hyperparameters(_Section):
    """The seed API's flat hyperparameters, accepted as is."""

    learning_rate: float = Field(2.0e-5, gt=0, le=1)
    batch_size: int = Field(2, ge=1)
    num_epochs: float = Field(3, gt=0)
    # Azure ML's spelling of generation.temperature, kept so its scripts run unchanged.
    temperature: float = Field(0.0, ge=0, description="the teacher's sampling temperature (0: greedy); "
                               "generation.temperature wins when both are given")


class GenerationSpec(_Section):
    max_tokens: int = Field(256, ge=1)
    temperature: float | None = Field(None, ge=0, description="the teacher's sampling temperature (0: greedy; "
                                      "default: hyperparameters.temperature, else 0); wins over it when both are given")
    top_p: float = Field(1.0, gt=0, le=1)
    num_samples: int = Field(1, ge=1)
    seed: int | None = 0
    stop: list[str] = Field(default_factory=list)
    top_logprobs: int = Field(0, ge=0, le=20)
    system_prompt: str | None = None
    teacher_prompt: str | None = Field(
        None, description="instructions/few-shot examples shown to the teacher only, before the input"
    )
    few_shot: int = Field(0, ge=0, description="labelled training rows put in the teacher's prompt only")
    answer_mode: AnswerMode = Field("generate", description="rank: the teacher picks the best-scoring label")
    few_shot_order: FewShotOrder = Field("shuffled", description="the few-shot block's order: shuffled (seeded), or "
                                         "round_robin (one shot per label in turn, labels in sorted order)")
    # prior by measurement (bench/README.md, "Teacher labels"): the best teacher accuracy on every intent set
    # measured (mean 0.46 -> 0.62 over none); content_free less (0.53) and not in every run.
    calibration: Calibration = Field("prior", description="answer_mode rank: how the teacher's label scores are "
                                     "corrected for its label bias before use (none, content_free, prior)")
    verify: Literal["reference", "majority", "none"] = "reference"
    min_success_ratio: float = Field(0.9, ge=0, le=1)
    deduplicate: bool = True
    max_examples: int | None = Field(None, ge=1, description="use only the first N rows of each data file")
    # Several teachers (`teachers:`): how their answers become one (None with one teacher; vote by default).
    combine: Literal["vote", "best_of", "route"] | None = None

    @field_validator("max_tokens")
    @classmethod
    def _within_any_context(cls, value: int) -> int:
        return check_max_tokens(value)


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
    kd_temperature: float = Field(1.0, gt=0, description="kd, sparse_kd, on_policy: softens teacher and student "
                                  "distributions inside the distillation loss (not a sampling temperature)")
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
    # Defaults by measurement (bench/README.md, "on_policy"): sampling from the first step at temperature 1 trails
    # kd at equal steps (an untrained student's samples are noise, and half of them never end).
    on_policy_warmup: float = Field(1.0, ge=0, le=1, description="on_policy: share of the training steps over "
                                    "which the sampled share rises from 0 to on_policy_ratio (stored answers first)")
    student_temperature: float = Field(0.5, gt=0, description="on_policy: the temperature the student samples its "
                                       "own answers at (not the loss's kd_temperature)")
    student_max_tokens: int = Field(256, ge=1, description="on_policy: new tokens per student sample")
    teacher_top_logprobs: int = Field(8, ge=1, le=20, description="K per token where the teacher gives top-K scores: "
                                      "on_policy with a served teacher, kd with a teacher of another tokenizer")
    hidden_states: HiddenStatesSpec | None = None
    attention: AttentionSpec | None = None


class EvaluationSpec(_Section):
    max_tokens: int = Field(256, ge=1)
    max_examples: int | None = Field(None, ge=1)
    # `batch_size` is its old spelling, still accepted (a job's fingerprints hash it by that name: jobspec/job.py).
    throughput_batch_size: int = Field(8, ge=1, validation_alias=AliasChoices("throughput_batch_size", "batch_size"),
                                       description="the throughput run's batch (a local model) or requests in flight "
                                                   "(a model behind an endpoint)")
    warmup: int = Field(1, ge=0, description="answers generated and discarded before timing")
    models: list[ModelLabel] = Field(default_factory=lambda: list(MODEL_LABELS))
    device: Device = "auto"
    bootstrap_samples: int = Field(1000, ge=0)
    examples_in_report: int = Field(5, ge=0)
    bootstrap_seed: int = Field(0, description="seed of the bootstrap resampling (intervals are reproducible)")
    throughput: bool = Field(True, description="also time the test set at throughput_batch_size (answers/s, "
                                               "tokens/s)")
    answer_mode: AnswerMode = Field("generate", description="rank: every model picks the best-scoring label")
    uncached_examples: int = Field(20, ge=0, description="test inputs timed again without the teacher's prefix cache")
    # A model that judges the answers (generative tasks): one judge, or several (their agreement is reported).
    judge: "JudgeSpec | list[JudgeSpec] | None" = Field(None, description="a judge of the answers (docs/evaluation.md)")

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        if isinstance(data, dict) and "batch_size" in data and "throughput_batch_size" in data:
            raise ValueError("give throughput_batch_size or its old spelling batch_size, not both")
        return data

    def judges(self) -> list["JudgeSpec"]:
        """Every judge, each with its name (given, else `judge`, or `judge-N` with several)."""
        found = self.judge if isinstance(self.judge, list) else [self.judge] if self.judge is not None else []
        named = [j if j.name else j.model_copy(update={"name": "judge" if len(found) == 1 else f"judge-{i + 1}"})
                 for i, j in enumerate(found)]
        return named

    @field_validator("judge")
    @classmethod
    def _judges_have_names_of_their_own(cls, value: "JudgeSpec | list[JudgeSpec] | None") -> object:
        if isinstance(value, list):
            if not value:
                raise ValueError("give at least one judge (or leave judge out)")
            names = [j.name for j in value if j.name]
            if len(set(names)) < len(names):
                raise ValueError(f"every judge needs its own name (got {', '.join(names)})")
        return value


class JudgeSpec(TeacherSpec):
    """evaluation.judge: a teacher section (any backend) that judges answers instead of giving them."""

    name: str | None = Field(None, description="the judge's name in eval/judge/ and the report")
    mode: Literal["pairwise", "rubric", "both"] = "pairwise"
    rubric: str | None = Field(None, description="what makes an answer good (default: the task type's own)")
    max_tokens: int = Field(64, ge=1, description="new tokens per judge reply")
    temperature: float = Field(0.0, ge=0, description="the judge's sampling temperature (0: greedy)")
    controls: int = Field(8, ge=1, description="test inputs of the control set (self vs self, corrupted copies)")
    max_examples: int | None = Field(None, ge=1, description="judge only the first N test inputs")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        return check_name(value)

    @model_validator(mode="before")
    @classmethod
    def _served_when_it_has_a_url(cls, data: object) -> object:
        # A judge is most often a model behind an endpoint: base_url or api_key_env without a backend means openai.
        if isinstance(data, dict) and "backend" not in data and (data.get("base_url") or data.get("api_key_env")):
            return {**data, "backend": "openai"}
        return data


EvaluationSpec.model_rebuild()


def evaluation_default(name: str) -> Any:
    """The default of an `evaluation:` setting: what `evaluate-model` and `models.evaluate/compare` use when not
    told, read here so that they never restate (and drift from) the spec's default."""
    return EvaluationSpec.model_fields[name].default
