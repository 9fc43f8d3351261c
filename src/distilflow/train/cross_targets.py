"""A training row whose teacher targets come from a teacher of another tokenizer: the teacher's top-k pieces at its
own tokens (an API's text pieces, or a local teacher's decoded top-k), carried to the student's answer tokens by
alignment.py. The row has the same columns as sparse_targets.build_row's, plus the unmatched mass (ULD).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from distilflow.train.alignment import AlignStats, TeacherPosition, align_answer
from distilflow.train.distill_trainer import TOPK_IDS, TOPK_LOGPROBS, UNMATCHED

NO_ANSWER_IN_TEMPLATE = "answer_not_found_in_student_template"
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class PieceSpeller:
    """A teacher token id -> the text piece it stands for: exact bytes for byte-level BPE (partial UTF-8 as
    `bytes:\\x..`), SentencePiece byte-fallback tokens as their byte, otherwise the tokenizer's decoding."""

    def __init__(self, tokenizer: Any) -> None:
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        self.tokenizer = tokenizer
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self.byte_level = type(decoder).__name__ == "ByteLevel"
        self.byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
        self.cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        if token_id not in self.cache:
            self.cache[token_id] = self._spell(token_id)
        return self.cache[token_id]

    def _spell(self, token_id: int) -> str:
        token = self.tokenizer.convert_ids_to_tokens(token_id)
        fallback = _BYTE_FALLBACK.fullmatch(token or "")
        if fallback:
            return f"bytes:\\x{fallback.group(1).lower()}"
        if self.byte_level and token and all(c in self.byte_decoder for c in token):
            raw = bytes(self.byte_decoder[c] for c in token)
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
        return self.tokenizer.decode([token_id], clean_up_tokenization_spaces=False)


def same_tokens(teacher: list[TeacherPosition], answer_ids: list[int], mapper: Callable[[str], int | None]) -> bool:
    """The teacher's own tokens are the student's tokens of the answer (one tokenizer): the id path applies."""
    return len(teacher) == len(answer_ids) and all(mapper(p.piece) == i for p, i in zip(teacher, answer_ids))


def _pad(rows: list[list[Any]], width: int, fill: Any) -> list[list[Any]]:
    return [row + [fill] * (width - len(row)) for row in rows]


def shown_answer(texts: tuple[str, str], answer: str) -> str:
    """The answer as the student's rendering shows it after the prompt: completion format (and many chat templates)
    strip it, and a served teacher's text often ends in a space or newline before its stop."""
    prompt_text, full_text = texts
    return answer if full_text.find(answer, len(os.path.commonprefix([prompt_text, full_text]))) >= 0 else answer.strip()


def aligned_row(tokenizer: Any, texts: tuple[str, str], answer: str, teacher: list[TeacherPosition], max_length: int,
                mapper: Callable[[str], int | None]) -> tuple[dict[str, Any], str, AlignStats]:
    """Tokenised row (labels on the answer and end of turn) with aligned targets on the answer's tokens; the reason
    it has none ("" when it has), and what the alignment carried over. `texts`: the student's rendering of the
    prompt, and of prompt + answer + end of turn; `mapper`: the student token that spells a piece exactly."""
    prompt_text, full_text = texts
    encoded = tokenizer(full_text, add_special_tokens=False, return_offsets_mapping=True)
    full_ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    start = len(os.path.commonprefix([prompt_ids, full_ids]))  # where the completion starts, as TRL's SFT computes it
    labels = [-100] * start + full_ids[start:]
    row: dict[str, Any] = {"input_ids": full_ids[:max_length], "labels": labels[:max_length],
                           "teacher_offset": 0, TOPK_IDS: [], TOPK_LOGPROBS: [], UNMATCHED: []}
    at = full_text.find(answer, len(os.path.commonprefix([prompt_text, full_text]))) if answer else -1
    positions = [j for j, (a, b) in enumerate(offsets) if j >= start and b > a >= at and b <= at + len(answer)]
    if at < 0 or not positions:
        return row, NO_ANSWER_IN_TEMPLATE, AlignStats()
    first, last = positions[0], positions[-1]
    span = list(range(first, last + 1))  # contiguous: the answer's text is one stretch of the rendering
    aligned = align_answer(answer, teacher, [full_ids[j] for j in span],
                           [(offsets[j][0] - at, offsets[j][1] - at) for j in span], mapper)
    n = min(len(span), max(0, max_length - first))
    width = max([len(r) for r in aligned.ids] + [1])
    rest = max([len(r) for r in aligned.unmatched] + [0])
    row["teacher_offset"] = first
    row[TOPK_IDS] = _pad(aligned.ids, width, -1)[:n]
    row[TOPK_LOGPROBS] = _pad(aligned.logprobs, width, 0.0)[:n]
    row[UNMATCHED] = _pad(aligned.unmatched, rest, 0.0)[:n] if rest else []
    return row, "" if aligned.stats.aligned_tokens else "no_aligned_span", aligned.stats
