"""Extractive / short-answer question answering, scored SQuAD-style (exact match and token F1)."""

from __future__ import annotations

from typing import Any

from distilflow.metrics.text import (MetricStats, bleu_stats, chrf_stats, exact_match, mean_stats,
                                         normalize_answer, token_f1)
from distilflow.tasks.base import Message, RowError, Task, require_text, user_prompt

PROMPT_WITH_CONTEXT = "Context: {context}\n\nQuestion: {question}\nAnswer with a short phrase taken from the context."
PROMPT = "Question: {question}\nAnswer with a short phrase."
# A teacher answer counts as agreeing with the references at this token F1 (answers are spans, so
# paraphrase and extra words are common; F1 tolerates them where exact match would not).
AGREEMENT_F1 = 0.5


def _answers(row: dict[str, Any]) -> list[str] | None:
    if "answers" in row and row["answers"] is not None:
        value = row["answers"]
        if isinstance(value, dict) and "text" in value:  # SQuAD / HF datasets form
            value = value["text"]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise RowError("field 'answers' must be a non-empty list of strings")
        return value
    if row.get("answer") is not None:
        if not isinstance(row["answer"], str):
            raise RowError(f"field 'answer' must be a string, not {type(row['answer']).__name__}")
        return [row["answer"]]
    return None


class QaTask(Task):
    name = "qa"
    input_fields = ("context", "question")
    primary_metric = "f1"
    metric_names = ("exact_match", "f1", "bleu", "chrf")

    def example_from_fields(self, row: dict[str, Any]) -> tuple[list[Message], Any]:
        question = require_text(row, "question")
        if row.get("context") is not None:
            context = require_text(row, "context")
            prompt = PROMPT_WITH_CONTEXT.format(context=context.strip(), question=question.strip())
        else:
            prompt = PROMPT.format(question=question.strip())
        return user_prompt(prompt), _answers(row)

    def prompt_for_input(self, text: str) -> str:
        return PROMPT.format(question=text.strip())

    def reference_from_text(self, text: str) -> Any:
        return [text]

    def extract_answer(self, text: str) -> str | None:
        # The first line is the answer; models often add an explanation after it.
        for line in text.strip().splitlines():
            line = line.strip().removeprefix("Answer:").strip()
            if line:
                return line
        return None

    def agrees(self, answer: str, reference: Any) -> bool:
        return token_f1(answer, reference) >= AGREEMENT_F1

    def answer_key(self, text: str) -> str | None:
        answer = self.extract_answer(text)
        return normalize_answer(answer) if answer else None

    def example_scores(self, predictions: list[str], references: list[Any]) -> list[float]:
        return [token_f1(self.extract_answer(p) or "", r) for p, r in zip(predictions, references)]

    def metric_stats(self, predictions: list[str], references: list[Any]) -> dict[str, MetricStats]:
        # Scored on the extracted answer (first line), as the reference answers are short spans.
        answers = [self.extract_answer(p) or "" for p in predictions]
        return {
            "exact_match": mean_stats([exact_match(a, r) for a, r in zip(answers, references)]),
            "f1": mean_stats([token_f1(a, r) for a, r in zip(answers, references)]),
            "bleu": bleu_stats(answers, references, effective_order=True),
            "chrf": chrf_stats(answers, references),
        }
