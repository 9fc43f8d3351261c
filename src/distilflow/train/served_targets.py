"""on_policy with a served teacher (`teacher.backend: openai`): every row of a batch (student samples and stored
answers alike) is scored through the completions endpoint (teachers/scoring.py) and the teacher's top-K
alternatives at each answer token become the sparse targets of losses.sparse_kd_loss (K buckets + the tail).

Alignment. The row is sent as token ids where the server takes them (vLLM, the OpenAI protocol), otherwise as text
(the student's tokens decoded, special tokens spelt out; llama-cpp-python's server takes text only), which the
server tokenizes again. Scores of sent ids are taken position by position; echoed text tokens are walked against
the student's ids:
a server token pairs with the student token it maps to (TokenMapper: vocabulary entry, byte-level spelling,
`token_id:N`), or with any student token when it is '' (llama.cpp spells special tokens and partial UTF-8 bytes
as ''); a student special token the server did not echo (llama.cpp drops BOS tokens, and the chat templates of
SmolLM2 and others use BOS as start of turn) is skipped. Where the server tokenized a sampled spelling of some
text differently, the walk resumes where both sides start a token at the same place again (the tokens in between
have no targets); text that does not survive decoding (a sample of invalid UTF-8 bytes) ends the row's targets. An answer token without a target is taken out of the
loss (its label set to -100) rather than diluting it, and counted (`served_answer_tokens_without_targets`).

In the alternatives, '' stands for the end-of-turn token (the one special token an answer ends with), so the
teacher's wish to stop is not lost to the tail bucket.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch

from distilflow.errors import DistilflowError
from distilflow.models import TopLogprobs
from distilflow.teachers.base import TeacherFailure
from distilflow.teachers.scoring import PromptLogprobScorer, PromptScores, ScoreRequest
from distilflow.train.alignment import TeacherPosition, align_answer
from distilflow.train.distill_trainer import TOPK_IDS, TOPK_LOGPROBS
from distilflow.train.rollout import IGNORE
from distilflow.train.sparse_targets import TokenMapper, stored_targets


def align(our_ids: list[int], scores: PromptScores, mapper: TokenMapper, special_ids: set[int],
          spell: Callable[[int], str] | None = None) -> list[int | None]:
    """For each of our positions, the index of the server entry that scores it (None: no entry)."""
    found: list[int | None] = [None] * len(our_ids)
    i = e = 0
    while i < len(our_ids) and e < len(scores.tokens):
        token = scores.tokens[e]
        if token == "" or mapper(token) == our_ids[i]:
            found[i] = e
            i, e = i + 1, e + 1
        elif our_ids[i] in special_ids:
            i += 1
        else:
            resumed = _resync(our_ids, scores.tokens, i, e, spell) if spell is not None else None
            if resumed is None:
                break
            i, e = resumed
    return found


def _resync(our_ids: list[int], tokens: list[str], i: int, e: int, spell: Callable[[int], str],
            span: int = 32) -> tuple[int, int] | None:
    """Where both sides start a token at the same place again, after spelling one piece of text with different
    tokens (a sampled spelling the server's tokenizer would not choose); the tokens in between get no target."""
    ours, theirs, ii, ee = spell(our_ids[i]), tokens[e], i + 1, e + 1
    for _ in range(span):
        if ours == theirs:
            return ii, ee
        if len(ours) <= len(theirs) and ii < len(our_ids):
            ours, ii = ours + spell(our_ids[ii]), ii + 1
        elif len(theirs) < len(ours) and ee < len(tokens):
            theirs, ee = theirs + tokens[ee], ee + 1
        else:
            return None
    return None


def _piece_starts(pieces: list[str], text: str, specials: list[str]) -> list[int] | None:
    """Where each server piece starts in the text sent; '' (llama.cpp's spelling of a special token) and a
    dropped BOS skip the special token's text there. None when the pieces do not spell the text."""
    starts, at = [], 0
    for piece in pieces:
        special = next((t for t in specials if t and text.startswith(t, at)), None)
        if piece and special is not None and not text.startswith(piece, at):
            at += len(special)  # a special token the server did not echo
        starts.append(at)
        if not piece:
            at += len(special) if special is not None else 0
        elif text.startswith(piece, at):
            at += len(piece)
        else:
            return None
    return starts


class ServedTeacher:
    """Attaches the served teacher's top-K targets to training batches."""

    def __init__(self, scorer: PromptLogprobScorer, tokenizer: Any, vocab_size: int) -> None:
        self.scorer, self.tokenizer, self.vocab_size = scorer, tokenizer, vocab_size
        self.mapper = TokenMapper(tokenizer)
        self.special_ids = set(tokenizer.all_special_ids)
        self.end_of_turn = tokenizer.eos_token or ""
        self.spell = lru_cache(maxsize=None)(lambda token: tokenizer.decode([token], clean_up_tokenization_spaces=False))
        self.stats: Counter[str] = Counter()

    def metrics(self) -> dict[str, int]:
        counts = self.scorer.counts
        return {"teacher_requests": counts["requests"], "teacher_retries": counts["retries"],
                "teacher_failed_requests": counts["failed"], "teacher_prompt_tokens": counts["prompt_tokens"],
                **{f"served_{k}": v for k, v in sorted(self.stats.items())}}

    def attach(self, batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Score every row with answer tokens (all batches in one concurrent round) and add TOPK_* columns."""
        requests = []
        for i, batch in enumerate(batches):
            for b, ids in enumerate(self._rows(batch)):
                if (batch["labels"][b] != IGNORE).any():
                    requests.append(ScoreRequest(f"{i}:{b}", self.tokenizer.decode(
                        ids, skip_special_tokens=False, clean_up_tokenization_spaces=False), token_ids=ids))
        results = self.scorer.score(requests) if requests else {}
        failures = [r for r in results.values() if isinstance(r, TeacherFailure)]
        if requests and len(failures) == len(requests):  # nothing to learn from: say why rather than train on nothing
            raise DistilflowError(f"the served teacher scored none of this step's {len(requests)} rows; the first "
                                  f"failure: {failures[0].reason}")
        return [self._with_targets(i, batch, results) for i, batch in enumerate(batches)]

    def _across_tokenizers(self, ids: list[int], answer: list[int], scores: PromptScores
                           ) -> dict[int, tuple[list[int], list[float]]]:
        """Targets at the answer tokens from a server of another tokenizer, by the text offsets of both sides
        (alignment.py); the unmatched mass stays in the tail bucket (no ULD term on this path). {} when the
        server's pieces do not spell the text sent."""
        text = self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        starts = _piece_starts(scores.tokens[:-1], text, self.tokenizer.all_special_tokens)
        if starts is None:
            return {}
        ends = [len(self.tokenizer.decode(ids[:j + 1], skip_special_tokens=False,
                                          clean_up_tokenization_spaces=False)) for j in range(len(ids))]
        start, stop = (ends[answer[0] - 1] if answer[0] else 0), ends[answer[-1]]
        positions = []
        for e, at in enumerate(starts):
            piece = scores.tokens[e]
            if at + len(piece) > stop or (at >= start and not (piece and scores.top[e])):
                break  # past the answer, or a gap: the teacher's tokens must cover the answer from its start
            if at >= start:
                if not positions and at != start:
                    return {}  # a server token runs across the answer's start
                top = scores.top[e] or {}
                positions.append(TeacherPosition(piece, top.get(piece, min(top.values())), tuple(top.items())))
        offsets = [((ends[j - 1] if j else 0) - start, ends[j] - start) for j in answer]
        aligned = align_answer(text[start:stop], positions, [ids[j] for j in answer], offsets, self.mapper)
        return {j: (aligned.ids[k], aligned.logprobs[k]) for k, j in enumerate(answer) if aligned.ids[k]}

    @staticmethod
    def _rows(batch: dict[str, Any]) -> list[list[int]]:
        lengths = batch["attention_mask"].sum(1).tolist()
        return [row[:n] for row, n in zip(batch["input_ids"].tolist(), lengths)]

    def _with_targets(self, i: int, batch: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
        labels = batch["labels"].clone()
        per_row: dict[int, dict[int, tuple[list[int], list[float]]]] = {}
        for b, ids in enumerate(self._rows(batch)):
            answer = [j for j in range(len(ids)) if labels[b, j] != IGNORE]
            if not answer:
                continue
            result = results.get(f"{i}:{b}")
            if not isinstance(result, PromptScores):
                self.stats["rows_failed" if isinstance(result, TeacherFailure) else "rows_unscored"] += 1
                labels[b, :] = IGNORE
                continue
            per_row[b] = self._targets(ids, answer, result)
            for j in answer:
                if j not in per_row[b]:
                    labels[b, j] = IGNORE
                    self.stats["answer_tokens_without_targets"] += 1
            self.stats["rows_scored"] += 1
            self.stats["answer_tokens_scored"] += len(per_row[b])
        width = max([len(t[0]) for row in per_row.values() for t in row.values()] or [1])
        ids_t = torch.full((*labels.shape, width), -1, dtype=torch.long)
        logprobs_t = torch.zeros((*labels.shape, width), dtype=torch.float32)
        for b, row in per_row.items():
            for j, (ids, values) in row.items():
                ids_t[b, j, :len(ids)] = torch.tensor(ids, dtype=torch.long)
                logprobs_t[b, j, :len(values)] = torch.tensor(values, dtype=torch.float32)
        device = batch["input_ids"].device
        return {**batch, "labels": labels.to(device), TOPK_IDS: ids_t.to(device), TOPK_LOGPROBS: logprobs_t.to(device)}

    def _targets(self, ids: list[int], answer: list[int], scores: PromptScores) -> dict[int, tuple[list[int], list[float]]]:
        """Answer position -> (top-K ids, log-probs) where the server's entry aligns and has alternatives."""
        if scores.from_ids and len(scores.tokens) >= len(ids):  # it scored our very ids: position by position
            entries: list[int | None] = list(range(len(ids)))
        else:
            entries = align(ids, scores, self.mapper, self.special_ids, self.spell)
            covered = sum(entries[j] is not None for j in answer)
            if covered < len(answer):  # perhaps another tokenizer: aligned by text where that covers more
                aligned = self._across_tokenizers(ids, answer, scores)
                if len(aligned) > covered:
                    self.stats["rows_aligned_across_tokenizers"] += 1
                    return aligned
        positions, tokens, values = [], [], []
        for j in answer:
            e = entries[j]
            top = scores.top[e] if e is not None else None
            if not top:
                continue
            ranked = sorted(top.items(), key=lambda kv: kv[1], reverse=True)
            positions.append(j)
            tokens.append([t if t else self.end_of_turn for t, _ in ranked])
            values.append([v for _, v in ranked])
        if not positions:
            return {}
        width = max(len(r) for r in tokens)
        padded = TopLogprobs(logprobs=[v + [float("-inf")] * (width - len(v)) for v in values],
                             tokens=[t + [""] * (width - len(t)) for t in tokens])
        id_rows, logprob_rows, unmappable, total = stored_targets(padded, self.mapper, self.vocab_size)
        self.stats["unmappable_teacher_tokens"] += unmappable
        self.stats["teacher_top_tokens"] += total
        return {j: (id_rows[k], logprob_rows[k]) for k, j in enumerate(positions)}
