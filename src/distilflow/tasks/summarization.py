"""Summarization: document -> short summary, scored with ROUGE-1/2/L (rouge-score)."""

from __future__ import annotations

from typing import Any

from distilflow.metrics.text import MetricStats, bleu_stats, chrf_stats, rouge, rouge_stats
from distilflow.tasks.base import Message, RowError, Task, require_text, user_prompt

PROMPT = "Summarize the following text in one or two sentences.\n\n{document}"
# Field names of common summarization data sets (SciTLDR: source/target; CNN/DM: article/highlights).
DOCUMENT_FIELDS = ("document", "source", "article", "text")
SUMMARY_FIELDS = ("summary", "target", "highlights", "tldr")
# Teacher summaries outside these word counts are rejected: too short to carry content, or not a summary.
MIN_WORDS, MAX_WORDS = 3, 200


def _references(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise RowError("field 'summary' must be a non-empty string or a list of non-empty strings")
    return value


class SummarizationTask(Task):
    name = "summarization"
    input_fields = DOCUMENT_FIELDS
    # chrF is the headline: ROUGE-L rewards a "summary" of the source's function words (measured on a broken
    # student: ROUGE-L retention 64% where chrF retention was 30% and its text was not English).
    primary_metric = "chrf"
    metric_names = ("rouge1", "rouge2", "rougeL", "bleu", "chrf")
    free_text = True

    def example_from_fields(self, row: dict[str, Any]) -> tuple[list[Message], Any]:
        document_key = next((k for k in DOCUMENT_FIELDS if k in row), "document")
        document = require_text(row, document_key, allow_list=True)
        summary_key = next((k for k in SUMMARY_FIELDS if row.get(k) is not None), None)
        reference = _references(row[summary_key]) if summary_key else None
        return user_prompt(PROMPT.format(document=document.strip())), reference

    def prompt_for_input(self, text: str) -> str:
        return PROMPT.format(document=text.strip())

    def reference_from_text(self, text: str) -> Any:
        return [text]

    def check_teacher_answer(self, text: str, reference: Any, verify: bool) -> str | None:
        reason = super().check_teacher_answer(text, reference, verify)
        if reason is None:
            words = len(text.split())
            if words < MIN_WORDS:
                return "too_short"
            if words > MAX_WORDS:
                return "too_long"
        return reason

    def example_scores(self, predictions: list[str], references: list[Any]) -> list[float]:
        return [rouge(p, r)["rougeL"] for p, r in zip(predictions, references)]

    def metric_stats(self, predictions: list[str], references: list[Any]) -> dict[str, MetricStats]:
        return {**rouge_stats(predictions, references), "bleu": bleu_stats(predictions, references),
                "chrf": chrf_stats(predictions, references)}
