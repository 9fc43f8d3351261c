"""The `tune:` section: which training settings `distilflow tune` searches, over which ranges or choices, and how
long. Settings are named briefly (`learning_rate`, `kd_alpha`, `lora.r`); TUNABLE says where each lives."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import Field, field_validator, model_validator

from distilflow.jobspec.sections import _Section

# short name -> (path in the job spec, kind). "int" and "float" are sampled from a range, "choice" only from choices.
TUNABLE: dict[str, tuple[tuple[str, ...], str]] = {
    "learning_rate": (("hyperparameters", "learning_rate"), "float"),
    "batch_size": (("hyperparameters", "batch_size"), "int"),
    "num_epochs": (("hyperparameters", "num_epochs"), "float"),
    "method": (("training", "method"), "choice"),
    "divergence": (("training", "divergence"), "choice"),
    "kd_alpha": (("training", "kd_alpha"), "float"),
    "kd_temperature": (("training", "kd_temperature"), "float"),
    "jsd_beta": (("training", "jsd_beta"), "float"),
    "warmup_ratio": (("training", "warmup_ratio"), "float"),
    "weight_decay": (("training", "weight_decay"), "float"),
    "lr_scheduler": (("training", "lr_scheduler"), "choice"),
    "max_steps": (("training", "max_steps"), "int"),
    "gradient_accumulation_steps": (("training", "gradient_accumulation_steps"), "int"),
    "lora.r": (("training", "lora", "r"), "int"),
    "lora.alpha": (("training", "lora", "alpha"), "int"),
    "lora.dropout": (("training", "lora", "dropout"), "float"),
}


class TuneRange(_Section):
    """A range (`{low, high, log, step}`) or a list of choices (`{choices: [...]}`) of one setting."""

    low: float | None = None
    high: float | None = None
    log: bool = Field(False, description="sample on a log scale (learning rates)")
    step: float | None = Field(None, gt=0)
    choices: list[str | int | float | bool] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _range_or_choices(self) -> "TuneRange":
        if self.choices is None and (self.low is None or self.high is None):
            raise ValueError("give a range {low: ..., high: ...} or {choices: [...]}")
        if self.choices is not None and (self.low is not None or self.high is not None):
            raise ValueError("give either a range (low, high) or choices, not both")
        if self.low is not None and self.high is not None:
            if self.low > self.high:
                raise ValueError("low must not be above high")
            if self.log and self.low <= 0:
                raise ValueError("a log range needs low > 0")
            if self.log and self.step is not None:
                raise ValueError("a range is either on a log scale or in steps, not both")
        return self


class TuneSpec(_Section):
    """`distilflow tune`: a search over training settings, each trial scored on the validation set."""

    trials: int = Field(20, ge=1, description="trials in all (--trials overrides)")
    budget_minutes: float | None = Field(None, gt=0, description="stop the search after this long (--budget-minutes)")
    space: dict[str, TuneRange] = Field(default_factory=dict, description="setting -> range or choices")
    pruner: str = Field("median", pattern="^(median|none)$", description="stop trials whose first scores lag")
    startup_trials: int = Field(2, ge=0, description="finished trials before the pruner compares")
    seed: int = 0

    @field_validator("space")
    @classmethod
    def _known_settings(cls, value: dict[str, TuneRange]) -> dict[str, TuneRange]:
        for name, bounds in value.items():
            if name not in TUNABLE:
                close = difflib.get_close_matches(name, list(TUNABLE), n=1, cutoff=0.5)
                hint = f"; did you mean {close[0]!r}?" if close else f" (tunable: {', '.join(TUNABLE)})"
                raise ValueError(f"{name!r} is not a tunable setting{hint}")
            if TUNABLE[name][1] == "choice" and bounds.choices is None:
                raise ValueError(f"{name} takes choices: {{choices: [...]}}")
        return value


def default_space(training: dict[str, Any]) -> dict[str, TuneRange]:
    """The search when `tune.space` is empty: the learning rate and epochs, plus the divergence weight and
    temperature of the logit methods and the LoRA rank when LoRA is on (ranges of the usual recipes)."""
    space = {"learning_rate": TuneRange(low=1e-5, high=1e-3, log=True),
             "num_epochs": TuneRange(choices=[1, 2, 3])}
    if training.get("method") in ("kd", "sparse_kd", "on_policy"):
        space["kd_alpha"] = TuneRange(low=0.1, high=0.9)
        space["kd_temperature"] = TuneRange(low=0.5, high=2.0)
    if training.get("lora"):
        space["lora.r"] = TuneRange(choices=[8, 16, 32])
    return space
