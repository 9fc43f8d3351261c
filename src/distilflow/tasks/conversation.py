"""Open conversation: chat messages -> the next assistant turn, scored with BLEU and chrF (sacrebleu), and exact
match (the share of answers equal to the reference after SQuAD normalisation: "accuracy" for scripts that ask for
it, and the one figure that says "word for word" when replies are canned)."""

from __future__ import annotations

from typing import Any

from distilflow.metrics.text import MetricStats, bleu_stats, chrf_stats, exact_match, mean_stats, sentence_bleu
from distilflow.tasks.base import Message, RowError, Task


class ConversationTask(Task):
    name = "conversation"
    primary_metric = "bleu"
    metric_names = ("bleu", "chrf", "exact_match")
    check_refusals = False
    free_text = True

    def example_from_fields(self, row: dict[str, Any]) -> tuple[list[Message], Any]:
        raise RowError("missing field 'messages' (conversation rows are {\"messages\": [{\"role\": ..., \"content\": ...}]})")

    def reference_from_text(self, text: str) -> Any:
        return [text]

    def example_scores(self, predictions: list[str], references: list[Any]) -> list[float]:
        return [sentence_bleu(p, r) for p, r in zip(predictions, references)]

    def metric_stats(self, predictions: list[str], references: list[Any]) -> dict[str, MetricStats]:
        return {"bleu": bleu_stats(predictions, references), "chrf": chrf_stats(predictions, references),
                "exact_match": mean_stats([exact_match(p, r) for p, r in zip(predictions, references)])}
