"""Grade-school math: question -> worked answer ending in a final number (GSM8K's `#### N`)."""

from __future__ import annotations

import re
from typing import Any

from distilflow.metrics.text import MetricStats, mean_stats
from distilflow.tasks.base import Message, RowError, Task, require_text, user_prompt

PROMPT = "{question}\n\nSolve the problem step by step, then give the final answer on its own line as '#### <number>'."
_FINAL = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)")
_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*|-?\.\d+")


def normalize_number(text: str) -> str | None:
    """'1,234.50' -> '1234.5'; None when `text` is not a number."""
    cleaned = text.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return str(int(value)) if value == int(value) else repr(value)


def final_number(text: str) -> str | None:
    """The answer after '####' if present, else the last number in the text."""
    match = _FINAL.search(text)
    if match:
        return normalize_number(match.group(1))
    numbers = _NUMBER.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


class MathTask(Task):
    name = "math"
    input_fields = ("question",)
    primary_metric = "accuracy"
    metric_names = ("accuracy",)

    def example_from_fields(self, row: dict[str, Any]) -> tuple[list[Message], Any]:
        question = require_text(row, "question")
        reference = None
        if row.get("answer") is not None:
            reference = self.reference_from_text(str(row["answer"]))
        return user_prompt(PROMPT.format(question=question.strip())), reference

    def prompt_for_input(self, text: str) -> str:
        return PROMPT.format(question=text.strip())

    def reference_from_text(self, text: str) -> Any:
        number = final_number(text)
        if number is None:
            raise RowError(f"the answer {text[:40]!r} holds no final number (GSM8K form: '... #### 42')")
        return number

    def reference_answer(self, reference: Any) -> str:
        return f"#### {reference}"

    def extract_answer(self, text: str) -> str | None:
        return final_number(text)

    def agrees(self, answer: str, reference: Any) -> bool:
        return abs(float(answer) - float(reference)) < 1e-6

    def example_scores(self, predictions: list[str], references: list[Any]) -> list[float]:
        out = []
        for prediction, reference in zip(predictions, references):
            answer = self.extract_answer(prediction)
            out.append(float(answer is not None and self.agrees(answer, reference)))
        return out

    def metric_stats(self, predictions: list[str], references: list[Any]) -> dict[str, MetricStats]:
        return {"accuracy": mean_stats(self.example_scores(predictions, references))}
