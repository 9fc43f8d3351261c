"""Teacher backend `hf`: a local Hugging Face model (hub id, folder or .gguf), batched generation, or ranking of
the labels (`generation.answer_mode: rank`) with the prompt prefix that every request shares cached once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from distilflow.models import (GenerationParams, Message, TopLogprobs, generate_batch, load_causal_lm, load_tokenizer,
                               model_revision, render_prompt)
from distilflow.models.prompts import completion_answer
from distilflow.models.scoring import PrefixCache, score_labels, shared_prefix
from distilflow.jobspec import TeacherSpec
from distilflow.teachers.base import Teacher, TeacherAnswer, TeacherRequest, TeacherResult

# A shared prefix shorter than this is not worth a cache (the chat template's own preamble, a short instruction).
MIN_CACHED_PREFIX_TOKENS = 32


class HFTeacher(Teacher):
    def __init__(self, spec: TeacherSpec, section: str = "teacher") -> None:
        self.spec = spec
        self._model = None
        self._tokenizer = None

    def identity(self) -> dict[str, Any]:
        identity = {"backend": "hf", "model": self.spec.model, "revision": model_revision(self.spec.model),
                    "dtype": self.spec.dtype}
        if self.spec.prompt_format != "chat":  # chat prompts keep the keys they had before formats existed
            identity["prompt_format"] = self.spec.prompt_format
        return identity

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.spec.model)
        return self._tokenizer

    @property
    def model(self):
        if self._model is None:
            self._model = load_causal_lm(self.spec.model, device=self.spec.device, dtype=self.spec.dtype).eval()
        return self._model

    def render(self, messages: list[Message]) -> str:
        return render_prompt(self.tokenizer, messages, self.spec.prompt_format)

    def count_tokens(self, messages: list[Message]) -> int | None:
        return len(self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"])

    def generate(self, requests: Sequence[TeacherRequest], params: GenerationParams) -> Iterator[TeacherResult]:
        # Sorting by prompt length keeps padding (wasted compute) low inside each batch.
        ordered = sorted(requests, key=lambda r: sum(len(m["content"]) for m in r.messages))
        if params.choices:
            yield from self._rank(ordered, params)
            return
        size = self.spec.batch_size
        for start in range(0, len(ordered), size):
            batch = ordered[start:start + size]
            outputs = generate_batch(self.model, self.tokenizer, [r.messages for r in batch], params,
                                     self.spec.prompt_format)
            for request, output in zip(batch, outputs):
                yield TeacherAnswer(key=request.key, texts=output.texts, prompt_tokens=output.prompt_tokens,
                                    completion_tokens=output.completion_tokens, finish_reasons=output.finish_reasons,
                                    top_logprobs=output.top_logprobs)

    def _rank(self, requests: Sequence[TeacherRequest], params: GenerationParams) -> Iterator[TeacherResult]:
        """The best label per request, with the teacher's log-probability of every label stored as its top-k (one
        position; the tokens are the labels): the soft target of logit distillation on the label distribution."""
        prompts = [self.render(r.messages) for r in requests]
        prefix = self.prefix_cache(prompts)
        continuations = [self.continuation(label) for label in params.choices]
        size = self.spec.batch_size
        for start in range(0, len(requests), size):
            scores = score_labels(self.model, self.tokenizer, prompts[start:start + size], continuations, prefix)
            for request, logprobs, best, tokens in zip(requests[start:start + size], scores.logprobs, scores.best,
                                                       scores.prompt_tokens):
                yield TeacherAnswer(key=request.key, texts=[params.choices[best]], prompt_tokens=tokens,
                                    completion_tokens=0, finish_reasons=["stop"],
                                    top_logprobs=[TopLogprobs(logprobs=[logprobs], tokens=[list(params.choices)])])

    def continuation(self, label: str) -> str:
        """How a label follows the prompt: after a space in completion format, right after the template's
        generation prompt in chat format."""
        return completion_answer(label) if self.spec.prompt_format == "completion" else label

    def prefix_cache(self, prompts: list[str]) -> PrefixCache | None:
        """The key/value cache of the prefix every prompt shares (the few-shot block), or None when it is short."""
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        prefix = shared_prefix(ids)
        return PrefixCache(self.model, prefix) if len(prefix) >= MIN_CACHED_PREFIX_TOKENS else None

    def close(self) -> None:
        self._model = None
