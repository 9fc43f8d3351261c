"""The one measure loop, the same for every model that answers here (a local model, or one behind an endpoint):
warm-up, then every test input answered alone (latency and time to first token at batch size 1: what a user
of a chat feels), then the whole test set `throughput_batch_size` at a time (throughput: what a server sustains).
A `MeasuredModel` adapter says how to ask its model; the loop times it and builds the prediction rows.

An API model keeps its answers in a cache (a re-run pays nothing twice): an answer read from it took no time, so
speed is measured on the answers asked in this run only, warm-up and throughput included, and the result says
how many came from the cache. An answer the model failed to give is a failed prediction (scored as empty)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distilflow.evaluate.config import TestExample, progress_steps
from distilflow.evaluate.perf import Spread
from distilflow.models import Message
from distilflow.results import AnswerTiming, Prediction

if TYPE_CHECKING:
    from distilflow.jobspec import EvaluationSpec

Conversation = list[Message]


@dataclass
class Answer:
    text: str
    seconds: float | None = None  # the whole answer, alone (batch size 1); None in the throughput run
    ttft: float | None = None  # until its first token
    prompt_tokens: int | None = None  # None when the model does not say
    completion_tokens: int | None = None
    cached: bool = False  # read from the answer cache (asked in an earlier run): not timed
    error: str | None = None  # why the model gave no answer (an endpoint's 400 for this input, ...)


class MeasuredModel(ABC):
    """How the loop asks one kind of model; the figures only that kind can give come from `figures`."""

    ttft_source: str  # what "first token" means for this kind of model, stated in metrics.json

    @abstractmethod
    def answer_one(self, messages: Conversation) -> Answer:
        """One greedy answer at batch size 1, with its latency (and time to first token when known)."""

    @abstractmethod
    def answer_all(self, conversations: list[Conversation], batch_size: int,
                   on_answered: Callable[[int], None]) -> list[Answer]:
        """Every conversation, `batch_size` at a time; `on_answered(n)` when n of them are answered."""

    @abstractmethod
    def figures(self, answers: list[Answer]) -> dict[str, Any]:
        """This kind of model's own figures (ModelResult fields: memory, size, cost ...), after the run."""

    def prepare(self, conversations: list[Conversation]) -> None:
        """Look at every input before anything is timed (a ranking model caches the prefix they all share)."""

    def cached(self, messages: Conversation) -> bool:
        """Whether this input's answer is stored from an earlier run (only API models keep them)."""
        return False

    def warm_up(self, singles: list[Conversation], batch: list[Conversation]) -> None:
        """Answers that are not timed: connection set-up, server and kernel warm-up. `batch` is one throughput
        batch, for models whose batched path warms up on its own (the default needs no more than singles)."""
        for messages in singles:
            self.answer_one(messages)

    def synchronize(self) -> None:
        """Wait for work still queued on a device, so that a clock reading marks the real end."""

    def close(self) -> None:
        """Release connections (the worker process ends right after, taking the model with it)."""


def measure(model: MeasuredModel, examples: list[TestExample], settings: "EvaluationSpec",
            on_progress: Callable[[int, int], None]) -> tuple[list[Prediction], dict[str, Any]]:
    """The prediction rows and the figures (ModelResult fields) of one model on the test inputs."""
    steps = progress_steps(len(examples), settings)
    model.prepare([e.messages for e in examples])
    fresh = [e.messages for e in examples if not model.cached(e.messages)]  # the inputs this run asks
    warm = fresh[:settings.warmup]
    batch_size = settings.throughput_batch_size
    batch_warm = bool(warm) and settings.throughput and batch_size > 1
    model.warm_up(warm, fresh[:batch_size] if batch_warm else [])

    predictions, answers = [], []
    for index, example in enumerate(examples):
        answer = model.answer_one(example.messages)
        answers.append(answer)
        timing = AnswerTiming(latency_s=answer.seconds, ttft_s=answer.ttft, output_tokens=answer.completion_tokens)
        predictions.append(Prediction.of(example.id, example.messages, answer.text, example.reference, timing,
                                         cached=answer.cached, error=answer.error))
        on_progress(index + 1, steps)

    figures = {**latency_figures(answers, model.ttft_source), "throughput_batch_size": batch_size,
               **answer_counts(answers)}
    if settings.throughput and fresh:
        figures.update(throughput_figures(model, fresh, batch_size,
                                          lambda done: on_progress(len(examples) + done, steps)))
    figures.update(model.figures(answers))
    return predictions, figures


def answer_counts(answers: list[Answer]) -> dict[str, int]:
    """How many answers came from the cache, were timed, or failed (only where some did not simply run here)."""
    cached = sum(a.cached for a in answers)
    failed = sum(a.error is not None for a in answers)
    if not cached and not failed:
        return {}
    return {"answers_from_cache": cached, "failed_answers": failed,
            "timed_answers": sum(a.seconds is not None for a in answers)}


def total_tokens(counts: list[int | None]) -> int | None:
    """The sum of token counts; None when any is unknown (a partial sum would pass for a whole one)."""
    return None if any(count is None for count in counts) else sum(counts)  # type: ignore[arg-type]


def latency_figures(answers: list[Answer], ttft_source: str) -> dict[str, Any]:
    timed = [a for a in answers if a.seconds is not None]  # not the cached or failed ones
    latencies = [a.seconds for a in timed]
    latency = Spread.of(latencies)  # type: ignore[arg-type]
    ttft = Spread.of([a.ttft for a in timed if a.ttft is not None])
    timed_tokens = total_tokens([a.completion_tokens for a in timed])
    answering = sum(latencies)  # type: ignore[arg-type]
    return dict(latency_mean_s=latency.mean, latency_p50_s=latency.p50, latency_p95_s=latency.p95,
                ttft_mean_s=ttft.mean, ttft_p50_s=ttft.p50, ttft_p95_s=ttft.p95, ttft_source=ttft_source,
                output_tokens=total_tokens([a.completion_tokens for a in answers if a.error is None]),
                # at batch size 1
                output_tokens_per_s=timed_tokens / answering if timed_tokens is not None and answering else None)


def throughput_figures(model: MeasuredModel, conversations: list[Conversation], batch_size: int,
                       on_answered: Callable[[int], None]) -> dict[str, Any]:
    model.synchronize()
    start = time.perf_counter()
    answers = model.answer_all(conversations, batch_size, on_answered)
    model.synchronize()
    elapsed = time.perf_counter() - start
    answered = [a for a in answers if a.error is None]  # a failed request is no answer
    tokens = total_tokens([a.completion_tokens for a in answered])
    return dict(throughput_answers_per_s=len(answered) / elapsed if elapsed and answered else None,
                throughput_output_tokens_per_s=tokens / elapsed if elapsed and answered and tokens is not None else None,
                throughput_seconds=elapsed)
