"""A local model that answers by ranking the labels (`evaluation.answer_mode: rank`): one forward pass per input,
the answer the best-scoring label (models/scoring.py). When the inputs share a long prefix (a teacher's few-shot
block), its key/value cache is computed once before timing and reused for every input, as a serving system runs
such a prompt; `uncached_examples` inputs are then timed again without it, so the report can show both figures."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from distilflow.evaluate.local import LocalModel
from distilflow.evaluate.measure import Answer, Conversation
from distilflow.evaluate.perf import Spread

MIN_CACHED_PREFIX_TOKENS = 32  # a shorter shared prefix (a chat template's preamble) is not worth a cache


class RankedLocalModel(LocalModel):
    ttft_source = "the ranking forward pass (the answer is complete after it)"

    def __init__(self, ref: str, *, device: str, dtype: str, prompt_format: str, choices: list[str],
                 uncached_examples: int, label_offsets: list[float] | None = None) -> None:
        from distilflow.models.prompts import completion_answer

        super().__init__(ref, device=device, dtype=dtype, prompt_format=prompt_format)
        self.choices = choices
        self.continuations = [completion_answer(c) if prompt_format == "completion" else c for c in choices]
        self.uncached_examples = uncached_examples
        self.label_offsets = label_offsets or []  # a calibrated teacher's (generation.calibration)
        self.prefix: Any = None
        self.prefix_seconds: float | None = None
        self.conversations: list[Conversation] = []

    def _render(self, conversations: list[Conversation]) -> list[str]:
        from distilflow.models import render_prompt

        return [render_prompt(self.tokenizer, messages, self.prompt_format) for messages in conversations]  # type: ignore[arg-type]

    def prepare(self, conversations: list[Conversation]) -> None:
        from distilflow.models.scoring import PrefixCache, shared_prefix

        self.conversations = conversations
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in self._render(conversations)]
        prefix = shared_prefix(ids) if len(ids) > 1 else []
        if len(prefix) >= MIN_CACHED_PREFIX_TOKENS:
            started = time.perf_counter()
            self.prefix = PrefixCache(self.model, prefix)
            self.prefix_seconds = time.perf_counter() - started

    def _rank(self, conversations: list[Conversation], prefix: Any) -> list[Answer]:
        from distilflow.models.scoring import score_labels

        scores = score_labels(self.model, self.tokenizer, self._render(conversations), self.continuations, prefix)
        best = scores.best
        if self.label_offsets:
            best = [max(range(len(row)), key=lambda i, row=row: row[i] + self.label_offsets[i])
                    for row in scores.logprobs]
        return [Answer(self.choices[b], prompt_tokens=tokens) for b, tokens in zip(best, scores.prompt_tokens)]

    def warm_up(self, singles: list[Conversation], batch: list[Conversation]) -> None:
        for messages in singles:
            self._rank([messages], self.prefix)
        if batch:
            self._rank(batch, self.prefix)

    def _timed(self, messages: Conversation, prefix: Any) -> Answer:
        self.synchronize()
        start = time.perf_counter()
        answer = self._rank([messages], prefix)[0]
        self.synchronize()
        answer.seconds = answer.ttft = time.perf_counter() - start
        return answer

    def answer_one(self, messages: Conversation) -> Answer:
        return self._timed(messages, self.prefix)

    def answer_all(self, conversations: list[Conversation], batch_size: int,
                   on_answered: Callable[[int], None]) -> list[Answer]:
        answers: list[Answer] = []
        for start in range(0, len(conversations), batch_size):
            answers += self._rank(conversations[start:start + batch_size], self.prefix)
            on_answered(len(answers))
        return answers

    def figures(self, answers: list[Answer]) -> dict[str, Any]:
        figures = {**super().figures(answers), "answer_mode": "rank"}
        if self.prefix is None:
            return figures
        uncached = [self._timed(m, None).seconds for m in self.conversations[:self.uncached_examples]]
        spread = Spread.of(uncached)  # type: ignore[arg-type]
        return {**figures, "prefix_cache_tokens": self.prefix.length, "prefix_cache_seconds": self.prefix_seconds,
                "uncached_latency_mean_s": spread.mean, "uncached_latency_p50_s": spread.p50,
                "uncached_examples": len(uncached)}
