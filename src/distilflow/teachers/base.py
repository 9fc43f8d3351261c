"""The small protocol every teacher backend implements, and the request fingerprint used as cache key."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from distilflow.fingerprint import digest
from distilflow.models.generation import GenerationParams, TopLogprobs
from distilflow.models.prompts import Message

# Bump when the way requests are built changes, so old cached answers are not reused for new prompts.
PROMPT_TEMPLATE_VERSION = 1


@dataclass
class TeacherRequest:
    key: str  # fingerprint of everything that determines the answer; the cache key
    messages: list[Message]


@dataclass
class TeacherAnswer:
    key: str
    texts: list[str]  # one per sample
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reasons: list[str] = field(default_factory=list)
    top_logprobs: list[TopLogprobs] | None = None  # one per sample, when asked for

    def to_record(self) -> dict[str, Any]:
        """JSON-able form for the cache (log-probs are stored apart, compactly)."""
        return {"texts": self.texts, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "finish_reasons": self.finish_reasons}


@dataclass
class TeacherFailure:
    key: str
    reason: str


TeacherResult = TeacherAnswer | TeacherFailure


class Teacher(ABC):
    """A source of answers. `generate` yields each result as soon as it is known, in any order.

    The consumer makes each result durable (commits it to the cache) before it asks for the next one;
    a backend may rely on that, and keep a request's concurrency slot until then (see async_bridge.py).
    """

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What determines this teacher's answers besides the prompt (backend, model, revision)."""

    @abstractmethod
    def generate(
        self,
        requests: Sequence[TeacherRequest],
        params: GenerationParams,
    ) -> Iterator[TeacherResult]:
        """Answer every request; yield results as they complete (the consumer stops early by closing the iterator)."""

    def count_tokens(self, messages: list[Message]) -> int | None:
        """Prompt tokens for an estimate (None when the backend cannot tell without a request)."""
        return None

    def stats(self) -> dict[str, int]:
        """Counters so far (requests sent, retries, errors by kind), for the progress line and the metrics."""
        return {}

    def answers_by_endpoint(self) -> dict[str, int]:
        """Answers each endpoint gave in this run, when the teacher is spread over several (else empty)."""
        return {}

    def close(self) -> None:
        """Release models, connections and threads."""


def request_fingerprint(teacher_identity: dict[str, Any], messages: list[Message], params: GenerationParams) -> str:
    """Stable hash of what determines a teacher answer: teacher, prompt text, generation parameters."""
    payload = {
        "teacher": teacher_identity,
        "messages": messages,
        "params": params.as_dict(),
        "template_version": PROMPT_TEMPLATE_VERSION,
    }
    return digest(payload, length=None)
