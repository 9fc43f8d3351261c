"""`kd` with a local teacher of another tokenizer: the teacher reads each row in its own chat template and
tokens, once, before training; its top-K log-probs at each of its answer tokens are spelt as text pieces and
aligned to the student's answer tokens (alignment.py). Training then uses the chunked sparse loss (K matched
tokens + tail + ULD on the unmatched mass), so memory stays bounded and the teacher is not held during training.

Why before training rather than batch by batch: the teacher's input is its own tokenization, which the student's
batches do not carry, and the rows are the teacher's fixed answers (kd is off-policy), so one pass gives the
same targets as scoring every epoch, at 1/epochs of the cost.
"""

from __future__ import annotations

from typing import Any

import torch

from distilflow.models import render_chat
from distilflow.train.alignment import TeacherPosition, piece_bytes
from distilflow.train.cross_targets import PieceSpeller, aligned_row
from distilflow.train.distill_trainer import last_hidden_state, lm_head
from distilflow.train.losses import MAX_CHUNK_LOGITS
from distilflow.train.sparse_targets import (
    SparseStats,
    TargetSettings,
    TokenMapper,
    rendered_texts,
)

NO_TEACHER_SPELLING = "teacher_tokens_do_not_spell_the_answer"


def teacher_positions(model: Any, tokenizer: Any, speller: PieceSpeller, messages: list[dict[str, str]],
                      k: int) -> list[TeacherPosition] | None:
    """The teacher's own tokens of the answer, each with its log-prob and top-k pieces; None when its tokens do
    not spell the answer exactly (its template rewrites the answer, or one token spans template and answer)."""
    answer = messages[-1]["content"]
    prompt = render_chat(tokenizer, messages[:-1], generation_prompt=True)
    full = render_chat(tokenizer, messages, generation_prompt=False)
    if not answer or not full.startswith(prompt + answer):
        return None
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    end = len(prompt) + len(answer)
    positions = [j for j, (a, b) in enumerate(offsets) if b > len(prompt) and a < end]
    if not positions or positions[0] == 0 or offsets[positions[0]][0] != len(prompt):
        return None
    out = []
    for j, own, values, top_ids in _top_k(model, ids, positions, k):
        alternatives = {speller(int(i)): float(v) for i, v in zip(top_ids, values)}
        piece = speller(ids[j])
        alternatives.setdefault(piece, own)
        out.append(TeacherPosition(piece, own, tuple(alternatives.items())))
    if b"".join(piece_bytes(p.piece) for p in out) != answer.encode("utf-8"):
        return None  # the last token runs past the answer (into the end of turn), or the spelling is lossy
    return out


def _top_k(model: Any, ids: list[int], positions: list[int], k: int):
    """(position, log-prob of its own token, top-k log-probs, top-k ids) for each answer position: the head is
    applied to a bounded number of positions at a time (a 262k vocabulary would otherwise give a GB of logits)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        hidden = last_hidden_state(model, {"input_ids": torch.tensor([ids], device=device)})[0]
        head = lm_head(model)
        chunk = max(1, MAX_CHUNK_LOGITS // head.weight.shape[0])
        for start in range(0, len(positions), chunk):
            rows = positions[start:start + chunk]
            logits = head.logits(hidden[[j - 1 for j in rows]], head.weight, head.bias)  # j - 1 predicts token j
            log_probs = torch.log_softmax(logits, dim=-1)
            values, top_ids = log_probs.topk(min(k, log_probs.shape[-1]), dim=-1)
            own = log_probs.gather(1, torch.tensor([[ids[j]] for j in rows], device=device))[:, 0]
            yield from zip(rows, own.tolist(), values.tolist(), top_ids.tolist())
            del logits, log_probs


def local_teacher_rows(model: Any, teacher_tokenizer: Any, settings: TargetSettings, rows: list[dict[str, Any]],
                       k: int, stats: SparseStats) -> list[dict[str, Any]]:
    """Training rows with the local teacher's aligned targets; `stats` counts what the alignment carried and the
    rows without targets, by reason (their tokens count as unaligned)."""
    speller, mapper, out = PieceSpeller(teacher_tokenizer), TokenMapper(settings.tokenizer), []
    for row in rows:
        messages = row["messages"]
        positions = teacher_positions(model, teacher_tokenizer, speller, messages, k)
        texts = rendered_texts(settings.tokenizer, messages, settings.prompt_format)
        training_row, reason, aligned = aligned_row(settings.tokenizer, texts, messages[-1]["content"],
                                                    positions or [], settings.max_length, mapper)
        stats.rows += 1
        stats.aligned_rows += 1
        stats.alignment.add(aligned)
        if positions is None or reason:
            stats.reasons[NO_TEACHER_SPELLING if positions is None else reason] += 1
        out.append(training_row)
    return out
