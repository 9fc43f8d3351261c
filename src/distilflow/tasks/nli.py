"""Natural language inference: premise + hypothesis -> entailment / neutral / contradiction."""

from __future__ import annotations

import re
from typing import Any

from distilflow.metrics.text import MetricStats, mean_stats
from distilflow.tasks.base import Message, RowError, Task, require_text, user_prompt

LABELS = ("entailment", "neutral", "contradiction")
# MNLI/SNLI integer labels, and common spellings seen in exported data sets.
_LABEL_ALIASES = {"0": "entailment", "1": "neutral", "2": "contradiction", "entails": "entailment",
                  "entailed": "entailment", "contradicts": "contradiction", "contradictory": "contradiction"}
_LABEL_IN_TEXT = re.compile(r"\b(entailment|neutral|contradiction)\b", re.IGNORECASE)

QUESTION = ("Does the premise entail the hypothesis, contradict it, or neither? "
            "Answer with one word: entailment, neutral or contradiction.")
PROMPT = "Premise: {premise}\nHypothesis: {hypothesis}\n" + QUESTION


def normalize_label(value: Any) -> str | None:
    text = str(value).strip().lower()
    text = _LABEL_ALIASES.get(text, text)
    return text if text in LABELS else None


class NliTask(Task):
    name = "nli"
    input_fields = ("premise", "hypothesis")
    primary_metric = "accuracy"
    metric_names = ("accuracy",)

    def example_from_fields(self, row: dict[str, Any]) -> tuple[list[Message], Any]:
        premise = require_text(row, "premise")
        hypothesis = require_text(row, "hypothesis")
        reference = None
        if row.get("label") is not None:
            reference = normalize_label(row["label"])
            if reference is None:
                raise RowError(f"unknown NLI label {str(row['label'])[:40]!r} (expected one of {', '.join(LABELS)})")
        return user_prompt(PROMPT.format(premise=premise.strip(), hypothesis=hypothesis.strip())), reference

    def prompt_for_input(self, text: str) -> str:
        """They type the premise and hypothesis as "Premise: ...\nHypothesis: ..."; the question follows."""
        return f"{text.strip()}\n{QUESTION}"

    def reference_from_text(self, text: str) -> Any:
        label = self.extract_answer(text)
        if label is None:
            raise RowError(f"the assistant turn {text[:40]!r} holds no NLI label ({', '.join(LABELS)})")
        return label

    def extract_answer(self, text: str) -> str | None:
        match = _LABEL_IN_TEXT.search(text)
        return match.group(1).lower() if match else None

    def agrees(self, answer: str, reference: Any) -> bool:
        return answer == reference

    def example_scores(self, predictions: list[str], references: list[Any]) -> list[float]:
        return [float(self.extract_answer(p) == r) for p, r in zip(predictions, references)]

    def metric_stats(self, predictions: list[str], references: list[Any]) -> dict[str, MetricStats]:
        return {"accuracy": mean_stats(self.example_scores(predictions, references))}
