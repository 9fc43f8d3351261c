"""The evaluation results every later step reads: one model's metrics.json (`ModelResult`) and the rows of its
predictions.jsonl (`Prediction`). The evaluate stage writes them; the report, `compare` and the command line
read them through these definitions, so a figure's name is spelled in one place.

A figure that does not apply to a model is absent from its file; one that applies but cannot be measured (an
API model's memory) is null. Files keep exactly the keys that were set (`to_json` drops the unset ones).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from distilflow.io import iter_jsonl, read_json

# peak_memory_kind of a local model, and how the command line names it.
PEAK_RSS = "process_peak_rss"
CUDA_MAX_ALLOCATED = "cuda_max_allocated"
MEMORY_KINDS = {PEAK_RSS: "peak RSS of the worker process", CUDA_MAX_ALLOCATED: "CUDA max allocated"}
# Figures renamed since files were first written: old name -> name. Old metrics.json files (and code reading
# results["batch_size"]) still read.
RENAMED_FIGURES = {"batch_size": "throughput_batch_size"}


class Interval(BaseModel):
    """A score with its 95% percentile-bootstrap interval over n scored examples."""

    model_config = ConfigDict(extra="allow")

    value: float | None = None
    low: float | None = None
    high: float | None = None
    n: int = 0
    samples: int | None = None
    confidence: float | None = None


class Agreement(Interval):
    """How often a student gives the teacher's answer: `answer_agreement`, or `bleu_vs_teacher` for free text."""

    kind: str


class ModelResult(BaseModel):
    """One model's metrics.json: who it is, its task scores and its speed, memory and size figures."""

    # Files written by another version may hold figures this one does not know: keep them on a round trip.
    model_config = ConfigDict(extra="allow", validate_assignment=True)

    label: str | None = None
    model: str | None = None
    kind: str = "local"  # local | api | recorded
    evaluated: bool = True
    reason: str | None = None  # why a model was not evaluated
    task_type: str | None = None
    labels: list[str] | None = None  # a classification task's label set
    primary_metric: str | None = None
    # Shares of answers that are empty, repetitive, non-words, unfinished, or any of them ("degenerate"): text
    # checks no n-gram score can replace (metrics/degeneration.py).
    degeneration: dict[str, float | None] | None = None
    task_metrics: dict[str, float | None] = {}
    intervals: dict[str, Interval] = {}
    scored_examples: int | None = None
    examples: int | None = None
    # Latency per answer at batch size 1, and the time to its first token (seconds).
    latency_mean_s: float | None = None
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    ttft_mean_s: float | None = None
    ttft_p50_s: float | None = None
    ttft_p95_s: float | None = None
    ttft_source: str | None = None
    answer_mode: str | None = None  # "rank": the answer is the best-scoring label (one forward pass)
    # A ranked model whose inputs share a long prefix (a teacher's few-shot block) is timed with that prefix's
    # key/value cache, computed once (prefix_cache_seconds); then some inputs again without it.
    prefix_cache_tokens: int | None = None
    prefix_cache_seconds: float | None = None
    uncached_latency_mean_s: float | None = None
    uncached_latency_p50_s: float | None = None
    uncached_examples: int | None = None
    output_tokens: int | None = None
    output_tokens_per_s: float | None = None
    prompt_tokens: int | None = None
    # The whole test set at the evaluation's throughput_batch_size (written as batch_size by older versions).
    throughput_batch_size: int | None = None
    throughput_answers_per_s: float | None = None
    throughput_output_tokens_per_s: float | None = None
    throughput_seconds: float | None = None
    cost_per_1000_answers: float | None = None
    # Where answers came from (set when not every answer was asked and timed in this run): answers read from the
    # cache of an earlier run count for quality, not speed; failed ones are scored as empty answers.
    answers_from_cache: int | None = None
    timed_answers: int | None = None
    failed_answers: int | None = None
    # Size and memory.
    parameters: int | None = None
    weights_mb: float | None = None
    size_on_disk_mb: float | None = None
    device: str | None = None
    dtype: str | None = None
    load_seconds: float | None = None
    peak_memory_mb: float | None = None
    peak_memory_kind: str | None = None
    model_memory_mb: float | None = None
    process_rss_before_load_mb: float | None = None
    network: bool | None = None  # an API model: latency includes the network, memory is not measurable
    # How it was evaluated (never a key: only the NAME of its variable).
    base_url: str | None = None
    api_key_env: str | None = None
    max_tokens: int | None = None
    warmup: int | None = None
    note: str | None = None
    fingerprint: str | None = None  # what the result depends on; an equal one means it can be reused
    # Added by the readers: agreement with the teacher's answers, and a comparison's result folder.
    agreement_with_teacher: Agreement | None = None
    output_dir: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _renamed_figures(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(old in data for old in RENAMED_FIGURES):
            data = dict(data)
            for old, new in RENAMED_FIGURES.items():
                if old in data:
                    data.setdefault(new, data.pop(old))  # an old file may hold both: the new name wins
        return data

    # ----- reading and writing --------------------------------------------------------------------------
    @classmethod
    def of(cls, value: "ModelResult | dict[str, Any] | None") -> "ModelResult":
        """A result from its JSON form (report.json, a test's dict) or as it is."""
        if isinstance(value, ModelResult):
            return value
        return cls.model_validate(value or {})

    @classmethod
    def read(cls, path: str | Path) -> "ModelResult | None":
        """The metrics.json at `path`; None when it is missing or unreadable."""
        data = read_json(path)
        return cls.model_validate(data) if isinstance(data, dict) else None

    @classmethod
    def not_evaluated(cls, label: str, model: str | None, reason: str) -> "ModelResult":
        return cls(label=label, model=model, evaluated=False, reason=reason)

    def to_json(self, *, without_fingerprint: bool = False) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True,
                               exclude={"fingerprint"} if without_fingerprint else None)

    # ----- what the readers ask ---------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        """Whether a figure applies to this model (it is in its file, even as null: not measurable)."""
        if name not in type(self).model_fields:
            raise KeyError(f"{name!r} is not a field of ModelResult")  # a misspelt figure fails loudly
        return name in self.model_fields_set

    def score(self, metric: str) -> float | None:
        return self.task_metrics.get(metric)

    def interval(self, metric: str) -> Interval | None:
        return self.intervals.get(metric)

    def flat(self) -> dict[str, Any]:
        """The JSON form with the task metrics also at the top level (result["bleu"]), for `evaluate-model`."""
        data = self.to_json()
        return {**self.task_metrics, **{k: v for k, v in data.items() if k != "task_metrics"}}

    def headline(self) -> dict[str, Any]:
        """What the evaluate stage records per model in the job store."""
        if not self.evaluated:
            return {"evaluated": False, "reason": self.reason}
        out: dict[str, Any] = {"task_metrics": self.task_metrics, "latency_mean_s": self.latency_mean_s,
                               "peak_memory_mb": self.peak_memory_mb, "parameters": self.parameters}
        if self.agreement_with_teacher is not None:
            out["agreement_with_teacher"] = self.agreement_with_teacher.value
        return out


# Figures a user may ask for by name in `metrics=[...]` (besides the task's own metrics), and the short names
# they may use instead.
FIGURES = ("latency_mean_s", "latency_p50_s", "latency_p95_s", "ttft_mean_s", "ttft_p50_s", "ttft_p95_s",
           "throughput_answers_per_s", "throughput_output_tokens_per_s", "output_tokens_per_s", "peak_memory_mb",
           "model_memory_mb", "parameters", "size_on_disk_mb", "cost_per_1000_answers")
FIGURE_ALIASES = {"inference_time": "latency_mean_s", "latency": "latency_mean_s", "memory": "peak_memory_mb",
                  "peak_memory": "peak_memory_mb", "throughput": "throughput_answers_per_s",
                  "time_to_first_token": "ttft_mean_s", "ttft": "ttft_mean_s", "size": "size_on_disk_mb",
                  "cost": "cost_per_1000_answers", "params": "parameters"}
# Always kept when a user picks some figures: what says which model and which test this is.
IDENTITY = ("label", "model", "kind", "task_type", "primary_metric", "scored_examples", "examples", "device",
            "network", "output_dir")
assert set(FIGURES) | set(FIGURE_ALIASES.values()) | set(IDENTITY) <= set(ModelResult.model_fields)
# Task metrics by the names of Azure ML's distillation API. "accuracy" is the task's own where it has one (nli,
# math); where answers are text (qa, conversation) it is exact_match, the share of answers equal to the reference.
METRIC_ALIASES = {"bleu_score": "bleu"}
_ACCURACY_FALLBACK = "exact_match"


def metric_key(name: str, measured: Collection[str]) -> str | None:
    """The key of the figure a user asks for by `name` (distilflow's name or an alias) among `measured`, the keys a
    result has (task metrics and figures); None when it is not measured."""
    key = FIGURE_ALIASES.get(name) or METRIC_ALIASES.get(name, name)
    if key == "accuracy" and key not in measured:
        key = _ACCURACY_FALLBACK
    return key if key in measured else None


def metric_names_accepted(measured: Collection[str]) -> list[str]:
    """Every name `metric_key` accepts for these keys, for an error message."""
    aliases = [*FIGURE_ALIASES, *METRIC_ALIASES, "accuracy"]
    return sorted(set(measured) | {a for a in aliases if metric_key(a, measured) is not None})


class EvaluationResults(dict):  # type: ignore[type-arg]
    """What `models.evaluate` returns: one model's figures as a dict (JSON-able, task metrics at the top level),
    read by distilflow's names or Azure ML's (results["accuracy"], results["bleu_score"], results["inference_time"])
    and as attributes (results.bleu). `interval(name)` is a task metric's 95% interval with its n."""

    def __missing__(self, key: str) -> Any:
        found = metric_key(RENAMED_FIGURES.get(key, key), self.keys())  # results["batch_size"] still reads
        if found is None or found == key:
            raise KeyError(f"{key!r} is not in these results (they hold: {', '.join(metric_names_accepted(self))})")
        return self[found]

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(str(error)) from None

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or (
            isinstance(key, str) and metric_key(RENAMED_FIGURES.get(key, key), self.keys()) is not None)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def interval(self, name: str) -> Interval | None:
        """The 95% bootstrap interval of a task metric (value, low, high, n), by any name it is read by."""
        intervals = dict.get(self, "intervals") or {}
        key = metric_key(name, intervals.keys())
        return Interval.model_validate(intervals[key]) if key else None

    @property
    def n(self) -> int | None:
        """How many test examples were scored (those with a reference)."""
        return dict.get(self, "scored_examples")


# ----- predictions.jsonl ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnswerTiming:
    """How long one answer took at batch size 1 (absent for answers that were recorded, not produced here)."""

    latency_s: float | None
    ttft_s: float | None
    output_tokens: int | None


@dataclass(frozen=True)
class Prediction:
    """One row of predictions.jsonl: a model's answer to one test input, next to the reference."""

    id: str
    input: str
    prediction: str
    reference: Any
    timing: AnswerTiming | None = None
    cached: bool = False  # read from the answer cache of an earlier run (no latency)
    error: str | None = None  # the model gave no answer (the prediction is empty), and why

    @classmethod
    def of(cls, example_id: str, messages: list[dict[str, str]], text: str, reference: Any,
           timing: AnswerTiming | None = None, *, cached: bool = False, error: str | None = None) -> "Prediction":
        """The row for an answer to `messages`; its input is the last user turn (what a reader recognises)."""
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        return cls(example_id, last_user, text, reference, timing, cached, error)

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> "Prediction":
        timing = None
        if "latency_s" in row:
            timing = AnswerTiming(row.get("latency_s"), row.get("ttft_s"), row.get("output_tokens"))
        return cls(str(row["id"]), row.get("input", ""), row.get("prediction", ""), row.get("reference"), timing,
                   bool(row.get("cached")), row.get("error"))

    def to_json(self) -> dict[str, Any]:
        row = {"id": self.id, "input": self.input, "prediction": self.prediction, "reference": self.reference}
        if self.timing is not None:
            row.update(latency_s=self.timing.latency_s, ttft_s=self.timing.ttft_s,
                       output_tokens=self.timing.output_tokens)
        if self.cached:
            row["cached"] = True
        if self.error is not None:
            row["error"] = self.error
        return row


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a predictions.jsonl (empty when there is none), as the scorers take them."""
    return list(iter_jsonl(path))
