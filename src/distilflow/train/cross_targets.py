"""A training row whose teacher targets come from a teacher of another tokenizer: the teacher's top-k pieces at its
own tokens (an API's text pieces, or a local teacher's decoded top-k), carried to the student's answer tokens by
alignment.py. The row has the same columns as sparse_targets.build_row's, plus the unmatched mass (ULD).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from distilflow.train.alignment import AlignStats, TeacherPosition, align_answer
from distilflow.train.distill_trainer import TOPK_IDS, TOPK_LOGPROBS, UNMATCHED

NO_ANSWER_IN_TEMPLATE = "answer_not_found_in_student_template"


def same_tokens(teacher: list[TeacherPosition], answer_ids: list[int], mapper: Callable[[str], int | None]) -> bool:
    """The teacher's own tokens are the student's tokens of the answer (one tokenizer): the id path applies."""
    return len(teacher) == len(answer_ids) and all(mapper(p.piece) == i for p, i in zip(teacher, answer_ids))


def _pad(rows: list[list[Any]], width: int, fill: Any) -> list[list[Any]]:
    return [row + [fill] * (width - len(row)) for row in rows]


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
