"""Estimating prompt tokens without asking the teacher: tiktoken when it is installed and usable, else chars/4.

Used for `generate --dry-run` and to charge the tokens-per-minute limiter before a request is sent.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from distilflow.jobspec import TeacherSpec
from distilflow.models import Message, context_length

# Chat formats add a few tokens per message (role markers, separators).
TOKENS_PER_MESSAGE = 4


@functools.lru_cache(maxsize=1)
def _tiktoken_encoder() -> Callable[[str], int] | None:
    try:
        import tiktoken

        encoding = tiktoken.get_encoding("o200k_base")  # may need a download on first use; any failure -> None
        encoding.encode("probe")
    except Exception:  # noqa: BLE001 - not installed, no network for its files, ...
        return None
    return lambda text: len(encoding.encode(text, disallowed_special=()))


def token_counter() -> tuple[Callable[[str], int], str]:
    """A text -> token count function and the name of the method, for saying which was used."""
    encoder = _tiktoken_encoder()
    if encoder is not None:
        return encoder, "tiktoken o200k_base"
    return (lambda text: (len(text) + 3) // 4), "chars/4 heuristic (install tiktoken for a closer estimate)"


def estimate_prompt_tokens(messages: list[Message], count: Callable[[str], int] | None = None) -> int:
    count = count or token_counter()[0]
    return sum(count(m["content"]) + TOKENS_PER_MESSAGE for m in messages) + 2


def teacher_context(teacher: TeacherSpec) -> int | None:
    """The teacher's context in tokens: `teacher.context_length`, else a local model's config.json (hf backend);
    None when unknown (an API that was not told)."""
    if teacher.context_length is not None:
        return teacher.context_length
    return context_length(teacher.model) if teacher.backend == "hf" else None
