"""`kd` with a local teacher of another tokenizer: the teacher reads each row as it read it in the teacher stage
(its prompt format, few-shot block and instructions: `teacher_view`) in its own tokens, once, before training; its
top-K log-probs at each of its answer tokens are spelt as text pieces and aligned to the student's answer tokens
(alignment.py). Training then uses the chunked sparse loss (K matched tokens + tail + ULD on the unmatched mass), so
memory stays bounded and the teacher is not held during training.

Why before training rather than batch by batch: the teacher's input is its own tokenization, which the student's
batches do not carry, and the rows are the teacher's fixed answers (kd is off-policy), so one pass gives the
same targets as scoring every epoch, at 1/epochs of the cost. The prompt every row shares (a 40-shot block is
about 1,000 tokens) is read once and its key-value cache reused, as the teacher stage does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from distilflow.models import render_chat, render_prompt
from distilflow.models.prompts import (
    COMPLETION_TURN_END,
    Message,
    PromptFormat,
    completion_answer,
)
from distilflow.models.scoring import PrefixCache, shared_prefix
from distilflow.train.alignment import TeacherPosition, piece_bytes
from distilflow.train.cross_targets import PieceSpeller, aligned_row, shown_answer
from distilflow.train.distill_trainer import causal_lm, last_hidden_state, lm_head
from distilflow.train.losses import MAX_CHUNK_LOGITS
from distilflow.train.sparse_targets import (
    SparseStats,
    TargetSettings,
    TokenMapper,
    rendered_texts,
)

NO_TEACHER_SPELLING = "teacher_tokens_do_not_spell_the_answer"
MIN_SHARED_PREFIX = 32  # tokens: below this, reading the shared prompt again costs about what its cache saves


def teacher_texts(tokenizer: Any, messages: list[Message], prompt_format: PromptFormat) -> tuple[str, str]:
    """(prompt, prompt + answer as it follows the prompt) in the teacher's format; in completion format the
    answer follows after one space, in chat format right after the generation prompt."""
    prompt = render_prompt(tokenizer, messages[:-1], prompt_format)
    if prompt_format == "completion":
        return prompt, prompt + completion_answer(messages[-1]["content"]) + COMPLETION_TURN_END
    return prompt, render_chat(tokenizer, messages, generation_prompt=False)


class PrefixScorer:
    """The teacher's top-k log-probs at given positions of a token sequence; the prefix every row shares is read
    once and its key-value cache reused for each row (models.scoring.PrefixCache, as the teacher stage does)."""

    def __init__(self, model: Any, shared: list[int]) -> None:
        self.model, self.shared = model, shared if len(shared) >= MIN_SHARED_PREFIX else []
        self.device = next(model.parameters()).device
        self.cache = PrefixCache(causal_lm(model), self.shared) if self.shared else None

    def hidden(self, ids: list[int]) -> tuple[torch.Tensor, int]:
        """The backbone's output for `ids` (from the end of the shared prefix when it starts with it) and the
        index of its first position in `ids`."""
        n = len(self.shared)
        suffix = torch.tensor([ids[n:]], device=self.device)
        if self.cache is not None and ids[:n] == self.shared and len(ids) > n:
            return self.cache.hidden_states(suffix, torch.ones_like(suffix))[0], n
        with torch.no_grad():
            return last_hidden_state(self.model, {"input_ids": torch.tensor([ids], device=self.device)})[0], 0

    def top_k(self, ids: list[int], positions: list[int], k: int) -> Iterator[tuple[int, float, list, list]]:
        """(position, log-prob of its own token, top-k log-probs, top-k ids) for each position: the head is
        applied to a bounded number of positions at a time (a 262k vocabulary would otherwise give a GB of logits)."""
        hidden, skip = self.hidden(ids)
        head = lm_head(self.model)
        chunk = max(1, MAX_CHUNK_LOGITS // head.weight.shape[0])
        with torch.no_grad():
            for start in range(0, len(positions), chunk):
                rows = positions[start:start + chunk]
                logits = head.logits(hidden[[j - 1 - skip for j in rows]], head.weight, head.bias)  # j-1 predicts j
                log_probs = torch.log_softmax(logits.float(), dim=-1)
                values, top_ids = log_probs.topk(min(k, log_probs.shape[-1]), dim=-1)
                own = log_probs.gather(1, torch.tensor([[ids[j]] for j in rows], device=self.device))[:, 0]
                yield from zip(rows, own.tolist(), values.tolist(), top_ids.tolist())
                del logits, log_probs


def teacher_positions(scorer: PrefixScorer, tokenizer: Any, speller: PieceSpeller, texts: tuple[str, str],
                      answer: str, k: int) -> list[TeacherPosition] | None:
    """The teacher's own tokens of the answer, each with its log-prob and top-k pieces; None when its tokens do
    not spell the answer exactly (its template rewrites the answer, or one token spans prompt and answer)."""
    prompt, full = texts
    shown = full[len(prompt):].find(answer.strip()) if full.startswith(prompt) and answer.strip() else -1
    if shown < 0:
        return None
    end = len(prompt) + shown + len(answer.strip())  # the answer as shown: a completion's leading space included
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    positions = [j for j, (a, b) in enumerate(offsets) if b > len(prompt) and a < end]
    if not positions or positions[0] == 0 or offsets[positions[0]][0] != len(prompt):
        return None
    out = []
    for j, own, values, top_ids in scorer.top_k(ids, positions, k):
        alternatives = {speller(int(i)): float(v) for i, v in zip(top_ids, values)}
        piece = speller(ids[j])
        alternatives.setdefault(piece, own)
        if not out:  # the stored answer is stripped: its first token loses the space a completion puts before it
            piece, alternatives = piece.lstrip() or piece, {p.lstrip() or p: v for p, v in alternatives.items()}
        out.append(TeacherPosition(piece, own, tuple(alternatives.items())))
    if b"".join(piece_bytes(p.piece) for p in out) != answer.strip().encode("utf-8"):
        return None  # the last token runs past the answer (into the end of turn), or the spelling is lossy
    return out


def local_teacher_rows(model: Any, teacher_tokenizer: Any, settings: TargetSettings, rows: list[dict[str, Any]],
                       k: int, stats: SparseStats, teacher_view: Callable[[list[Message]], list[Message]] = list,
                       teacher_format: PromptFormat = "chat") -> list[dict[str, Any]]:
    """Training rows with the local teacher's aligned targets; `teacher_view` turns a row's messages into what the
    teacher read in the teacher stage. `stats` counts what the alignment carried and the rows without targets,
    by reason (their tokens count as unaligned)."""
    speller, mapper, out = PieceSpeller(teacher_tokenizer), TokenMapper(settings.tokenizer), []
    views = [teacher_texts(teacher_tokenizer, teacher_view(row["messages"]), teacher_format) for row in rows]
    prompts = [teacher_tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt, _ in views]
    shared = shared_prefix(prompts) if len(prompts) > 1 else []
    scorer, stats.shared_prompt_tokens = PrefixScorer(model, shared), max(stats.shared_prompt_tokens, len(shared))
    for row, view in zip(rows, views):
        messages = row["messages"]
        texts = rendered_texts(settings.tokenizer, messages, settings.prompt_format)
        answer = shown_answer(texts, messages[-1]["content"])
        positions = teacher_positions(scorer, teacher_tokenizer, speller, view, answer, k)
        training_row, reason, aligned = aligned_row(settings.tokenizer, texts, answer, positions or [],
                                                    settings.max_length, mapper)
        stats.rows += 1
        stats.aligned_rows += 1
        stats.alignment.add(aligned)
        if positions is None or reason:
            stats.reasons[NO_TEACHER_SPELLING if positions is None else reason] += 1
        out.append(training_row)
    return out
