"""Turning `sparse_kd`'s synthetic rows into training targets: the teacher's stored top-K log-probs at the
positions of the answer's tokens in the student's chat template.

1. Token ids. The hf teacher stores token ids. API teachers store token strings, mapped to the student's ids:
   an exact vocabulary entry, `token_id:N` (vLLM's `return_tokens_as_token_ids`), `bytes:\\x..` or plain text
   spelled as a byte-level BPE token, or text that the tokenizer encodes as exactly one token (TokenMapper). A
   string that maps to nothing is unmappable: its probability joins the tail bucket. If most stored tokens are
   unmappable the teacher uses another tokenizer, and training stops.
2. Positions. The stored rows are one per token the teacher generated. The row's answer is re-tokenised in the
   student's chat template; the positions align when the answer's tokens there are as many as the stored rows.
   Otherwise, when the teacher's top-1 tokens decode to the answer (greedy decoding), the answer is spelled with
   those tokens. A row that aligns neither way (sampled answers whose text does not re-tokenise to the teacher's
   tokens, or answers cut at a stop string) gets no divergence term: it is trained with cross-entropy on its text
   only, and counted (`rows_without_teacher_targets`).
The end-of-turn tokens after the answer have no stored distribution either: cross-entropy only.
3. Labels. A teacher that answered by ranking the labels (`generation.answer_mode: rank`) stored one position:
   its log-probability of every label. That distribution becomes the target at the answer's first token, each
   label standing for the token it starts with in the student's prompt format (`LabelTargets`); the rest of the
   label follows from its first token and is learnt by cross-entropy.
A student in completion format (`student.prompt_format: completion`) reads its prompt as plain text and its answer
follows after a space (models/prompts.py); otherwise the student's chat template places it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from distilflow.models import TopLogprobs, render_chat
from distilflow.models.prompts import completion_answer, render_completion
from distilflow.teachers.cache import TeacherCache
from distilflow.train.alignment import AlignStats, TeacherPosition, recover_teacher_tokens
from distilflow.train.cross_targets import PieceSpeller, aligned_row, shown_answer
from distilflow.train.distill_trainer import TARGET_ROW, TOPK_IDS, TOPK_LOGPROBS, UNMATCHED

if TYPE_CHECKING:
    from distilflow.models import TopLogprobs

# A teacher of another tokenizer whose stored top-k does not hold the tokens it answered with (sampled outside it).
TEACHER_TOKENS_NOT_IN_TOP_K = "teacher_tokens_not_in_stored_top_k"
_ESCAPED_BYTES = re.compile(r"(\\x[0-9a-fA-F]{2})+")


class TokenMapper:
    """Teacher token strings -> student token ids (None when unmappable), cached.

    Tried in order: an exact vocabulary entry; `token_id:N` (vLLM's return_tokens_as_token_ids); escaped bytes of
    partial UTF-8 (vLLM's `bytes:\\xe2\\x80`, OpenAI's `\\xe2\\x80`); the token's bytes in byte-level BPE
    spelling (GPT-2 family: " hi" is "Ġhi"); text that the tokenizer encodes as exactly one token.
    """

    def __init__(self, tokenizer: Any) -> None:
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        self.tokenizer = tokenizer
        self.vocab = tokenizer.get_vocab()
        self.byte_spelling = bytes_to_unicode()
        self.cache: dict[str, int | None] = {}

    def __call__(self, token: str) -> int | None:
        if token not in self.cache:
            self.cache[token] = self._map(token)
        return self.cache[token]

    def _map(self, token: str) -> int | None:
        if token in self.vocab:
            return self.vocab[token]
        if token.startswith("token_id:") and token[9:].isdigit():
            return int(token[9:])
        escaped = token[6:] if token.startswith("bytes:") else token if _ESCAPED_BYTES.fullmatch(token) else None
        if escaped is not None:  # partial UTF-8: vLLM writes "bytes:\\xe2\\x80", OpenAI "\\xe2\\x80"
            raw = bytes(int(h, 16) for h in re.findall(r"\\x([0-9a-fA-F]{2})", escaped))
        else:
            raw = token.encode("utf-8")
        byte_level = "".join(self.byte_spelling[b] for b in raw)
        if byte_level in self.vocab:
            return self.vocab[byte_level]
        ids = self.tokenizer.encode(token, add_special_tokens=False) if escaped is None else []
        return ids[0] if len(ids) == 1 else None


def stored_targets(top: TopLogprobs, mapper: TokenMapper, vocab_size: int
                   ) -> tuple[list[list[int]], list[list[float]], int, int]:
    """Per generated position: K ids (-1 = no usable token) and log-probs; plus (unmappable, total) counts."""
    ids_rows: list[list[int]] = []
    logprob_rows: list[list[float]] = []
    unmappable = total = 0
    for position, logprobs in enumerate(top.logprobs):
        if top.token_ids is not None:
            ids = [int(i) if 0 <= int(i) < vocab_size else None for i in top.token_ids[position]]
        else:
            ids = [mapper(t) if t else None for t in (top.tokens or [])[position]]
        merged: dict[int, float] = {}  # two strings can name one id: their probabilities add up
        for token_id, logprob in zip(ids, logprobs):
            if logprob == -math.inf:  # an empty slot (the endpoint returned fewer than K)
                continue
            total += 1
            if token_id is None:
                unmappable += 1
            elif token_id in merged:
                merged[token_id] = _logaddexp(merged[token_id], logprob)
            else:
                merged[token_id] = float(logprob)
        width = len(logprobs)
        ids_rows.append(list(merged) + [-1] * (width - len(merged)))
        logprob_rows.append(list(merged.values()) + [0.0] * (width - len(merged)))
    return ids_rows, logprob_rows, unmappable, total


def _logaddexp(a: float, b: float) -> float:
    top = max(a, b)
    return top + math.log(math.exp(a - top) + math.exp(b - top))


def _tokens(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def rendered_texts(tokenizer: Any, messages: list[dict[str, str]], prompt_format: str) -> tuple[str, str]:
    """(prompt text, prompt + answer + end of turn text) as the student reads them."""
    if prompt_format == "completion":
        prompt = render_completion(messages[:-1])
        return prompt, prompt + completion_answer(messages[-1]["content"]) + (tokenizer.eos_token or "")
    return (render_chat(tokenizer, messages[:-1], generation_prompt=True),
            render_chat(tokenizer, messages, generation_prompt=False))


def build_row(tokenizer: Any, messages: list[dict[str, str]], ids: list[list[int]] | None,
              logprobs: list[list[float]] | None, max_length: int, prompt_format: str = "chat",
              first_token_only: bool = False) -> tuple[dict[str, Any], str]:
    """Tokenised row (input_ids, labels on the answer and end of turn) with teacher targets on the answer tokens
    (`first_token_only`: one stored position, a label distribution, for the answer's first token).

    Returns the row and why it has no targets ("" when aligned).
    """
    prompt, answer = messages[:-1], messages[-1]["content"]
    prompt_text, full_text = rendered_texts(tokenizer, messages, prompt_format)
    prompt_ids, full_ids = _tokens(tokenizer, prompt_text), _tokens(tokenizer, full_text)
    start = _common_prefix(prompt_ids, full_ids)  # where the completion starts, as TRL's SFT computes it
    answer_ids = _tokens(tokenizer, completion_answer(answer) if prompt_format == "completion" else answer)
    reason = ""
    if not ids:
        reason = "no_stored_logprobs"
    elif first_token_only:
        pass  # the label distribution targets the first answer token, whatever follows it
    elif full_ids[start:start + len(answer_ids)] == answer_ids and len(answer_ids) == len(ids):
        pass  # the answer re-tokenises to exactly as many tokens as the teacher generated
    else:
        greedy = _greedy_spelling(tokenizer, answer, ids) if prompt_format == "chat" else None
        if greedy is None:
            reason = "answer_does_not_retokenise_to_teacher_tokens"
        else:
            # Spell the answer with the teacher's own tokens; the end of turn is what the template puts after it.
            empty = _tokens(tokenizer, render_chat(tokenizer, [*prompt, {"role": "assistant", "content": ""}],
                                            generation_prompt=False))
            end_of_turn = empty[_common_prefix(prompt_ids, empty):]
            full_ids = prompt_ids + greedy + end_of_turn
            start, answer_ids = len(prompt_ids), greedy
    labels = [-100] * start + full_ids[start:]
    row: dict[str, Any] = {"input_ids": full_ids[:max_length], "labels": labels[:max_length], UNMATCHED: []}
    width = max((len(r) for r in ids), default=0) if ids else 0
    if not reason and width:
        n = min(len(ids) if first_token_only else len(answer_ids), max(0, max_length - start))
        row["teacher_offset"] = start
        row[TOPK_IDS] = ids[:n]
        row[TOPK_LOGPROBS] = logprobs[:n]
    else:
        row["teacher_offset"], row[TOPK_IDS], row[TOPK_LOGPROBS] = 0, [], []
    return row, reason


def _greedy_spelling(tokenizer: Any, answer: str, ids: list[list[int]]) -> list[int] | None:
    """The teacher's top-1 tokens, when they (or a prefix of them) decode to the answer: what greedy decoding said."""
    top1 = [row[0] for row in ids if row and row[0] >= 0]
    if len(top1) != len(ids):
        return None
    for n in range(len(top1), 0, -1):
        text = tokenizer.decode(top1[:n], skip_special_tokens=True)
        if text == answer:
            return top1[:n]
        if len(text) < len(answer):
            return None
    return None


class LabelTargets:
    """Maps the labels a ranked teacher stored (as its top-k "tokens") to the student's first answer tokens."""

    def __init__(self, first_tokens: dict[str, int]) -> None:
        self.first_tokens = first_tokens

    def covers(self, top: TopLogprobs) -> bool:
        return top.token_ids is None and len(top.logprobs) == 1 and bool(top.tokens) and \
            all(t in self.first_tokens for t in top.tokens[0])

    def __call__(self, label: str) -> int | None:
        return self.first_tokens.get(label)


@dataclass
class SparseStats:
    """How many rows and stored tokens became targets, and why rows got none."""

    rows: int = 0
    unmappable_tokens: int = 0
    stored_tokens: int = 0
    reasons: Counter[str] = field(default_factory=Counter)  # why a row has no teacher targets -> rows
    aligned_rows: int = 0  # rows whose targets were aligned across tokenizers (alignment.py)
    alignment: AlignStats = field(default_factory=AlignStats)
    shared_prompt_tokens: int = 0  # a local teacher of another tokenizer: the prompt all its rows share (few shots)

    @property
    def rows_without_targets(self) -> int:
        return sum(self.reasons.values())

    def metrics(self) -> dict[str, Any]:
        without = self.rows_without_targets
        return {"rows_with_teacher_targets": self.rows - without, "rows_without_teacher_targets": without,
                "rows_without_teacher_targets_by_reason": dict(self.reasons),
                "unmappable_teacher_tokens": self.unmappable_tokens, "stored_teacher_tokens": self.stored_tokens,
                **({"cross_tokenizer_rows": self.aligned_rows, **self.alignment.metrics()} if self.aligned_rows else {}),
                **({"teacher_shared_prompt_tokens": self.shared_prompt_tokens} if self.shared_prompt_tokens else {})}


@dataclass
class TargetSettings:
    """How stored teacher log-probs become the student's targets: its tokenizer, vocabulary size, maximum length,
    prompt format, and the job's labels (a ranked teacher stores one distribution over them)."""

    tokenizer: Any
    vocab_size: int
    max_length: int
    prompt_format: str = "chat"
    labels: tuple[str, ...] = ()
    teacher_tokenizer: Any = None  # a local teacher of another tokenizer: its stored ids are spelt with it

    @cached_property
    def teacher_speller(self) -> PieceSpeller:
        return PieceSpeller(self.teacher_tokenizer)

    def teacher_positions(self, top: TopLogprobs, answer: str) -> list[TeacherPosition] | None:
        """The teacher's own tokens of the answer with their top-k pieces, where they are text (an API's) or ids of
        another tokenizer; None where the pieces do not spell the answer (or are ids of the student's tokenizer)."""
        pieces = top.tokens
        if top.token_ids is not None and self.teacher_tokenizer is not None:
            pieces = [[self.teacher_speller(i) for i in row] for row in top.token_ids]
        if pieces is None:
            return None
        return recover_teacher_tokens(answer, pieces, top.logprobs)

    def label_first_tokens(self) -> dict[str, int]:
        """Each label -> the token its answer starts with, in the student's format."""
        spelled = {label: completion_answer(label) if self.prompt_format == "completion" else label
                   for label in self.labels}
        return {label: _tokens(self.tokenizer, text)[0] for label, text in spelled.items()}


def teacher_target_rows(cache: TeacherCache, synthetic: list[dict[str, Any]], settings: TargetSettings,
                        stats: SparseStats) -> list[dict[str, Any]]:
    """Training rows of synthetic chat rows, with the top-K targets their teacher answer stored in the cache."""
    mapper = TokenMapper(settings.tokenizer)
    label_mapper = LabelTargets(settings.label_first_tokens()) if settings.labels else None
    rows = []
    for row in synthetic:
        answer = cache.get(row.get("teacher_key", ""), with_logprobs=True)
        sample = row.get("sample", 0)
        ids = logprobs = None
        top = answer.top_logprobs[sample] if answer and answer.top_logprobs and sample < len(answer.top_logprobs) \
            else None
        if "label_logprobs" in row and settings.labels:  # calibrated by the teacher stage: these, not the raw scores
            top = TopLogprobs(logprobs=[row["label_logprobs"]], tokens=[list(settings.labels)])
        ranked = top is not None and label_mapper is not None and label_mapper.covers(top)
        training_row, reason = _cross_tokenizer_row(top, row["messages"], settings, mapper, stats) \
            if top is not None and not ranked else (None, "")
        if training_row is None:
            if top is not None:
                ids, logprobs, unmappable, total = stored_targets(top, label_mapper if ranked else mapper,
                                                                  settings.vocab_size)
                stats.unmappable_tokens += unmappable
                stats.stored_tokens += total
            training_row, reason = build_row(settings.tokenizer, row["messages"], ids, logprobs, settings.max_length,
                                             settings.prompt_format, first_token_only=ranked)
        stats.rows += 1
        if reason:
            stats.reasons[reason] += 1
        rows.append(training_row)
    return rows


def _cross_tokenizer_row(top: TopLogprobs, messages: list[dict[str, str]], settings: TargetSettings,
                         mapper: TokenMapper, stats: SparseStats) -> tuple[dict[str, Any] | None, str]:
    """The row aligned across tokenizers (alignment.py), or None where the id path applies: a teacher of the
    student's tokenizer (every one of its tokens is a student token, and the answer re-tokenises to them or
    is spelt with them), or pieces that do not spell the answer (which the id path counts as unmappable)."""
    texts = rendered_texts(settings.tokenizer, messages, settings.prompt_format)
    answer = shown_answer(texts, messages[-1]["content"])
    positions = settings.teacher_positions(top, answer)
    if positions is None and settings.teacher_tokenizer is not None:  # its ids are not the student's: no id path
        row, _ = build_row(settings.tokenizer, messages, None, None, settings.max_length, settings.prompt_format)
        return row, TEACHER_TOKENS_NOT_IN_TOP_K
    if positions is None:
        return None, ""
    if settings.teacher_tokenizer is None and all(mapper(p.piece) is not None for p in positions):
        ids, logprobs, _, _ = stored_targets(top, mapper, settings.vocab_size)
        if not build_row(settings.tokenizer, messages, ids, logprobs, settings.max_length, settings.prompt_format)[1]:
            return None, ""
    row, reason, aligned = aligned_row(settings.tokenizer, texts, answer, positions, settings.max_length, mapper)
    stats.aligned_rows += 1
    stats.alignment.add(aligned)
    return row, reason


@dataclass
class SparseTargetCollator:
    """TRL's padding collator for input_ids/labels, plus the [batch, sequence, K] teacher targets: from the rows
    themselves, or read from the memory-mapped store (`store`, logit_store.py) for the rows of this batch only."""

    base: Any  # trl DataCollatorForLanguageModeling
    store: Any = None  # logit_store.TargetStore

    def _targets(self, example: dict[str, Any]) -> tuple[Any, Any, Any]:
        import numpy as np

        row = example.get(TARGET_ROW)
        if row is not None and self.store is not None:
            return self.store.targets(row) if row >= 0 else (None, None, None)
        if not example.get(TOPK_IDS):
            return None, None, None
        rest = example.get(UNMATCHED) or None
        return (np.asarray(example[TOPK_IDS], dtype=np.int64), np.asarray(example[TOPK_LOGPROBS], dtype=np.float32),
                None if rest is None else np.asarray(rest, dtype=np.float32))

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch = self.base([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])
        length = batch["input_ids"].shape[1]
        targets = [self._targets(e) for e in examples]
        width = max([t[0].shape[1] for t in targets if t[0] is not None and t[0].size] or [1])
        rest = max([t[2].shape[1] for t in targets if t[2] is not None] or [0])
        ids = torch.full((len(examples), length, width), -1, dtype=torch.long)
        logprobs = torch.zeros((len(examples), length, width), dtype=torch.float32)
        unmatched = torch.zeros((len(examples), length, rest), dtype=torch.float32) if rest else None
        for b, (example, (row_ids, row_logprobs, row_rest)) in enumerate(zip(examples, targets)):
            if row_ids is None or not row_ids.size:
                continue
            offset = example["teacher_offset"]
            n = max(0, min(len(row_ids), length - offset))
            ids[b, offset:offset + n, :row_ids.shape[1]] = torch.from_numpy(row_ids[:n])
            logprobs[b, offset:offset + n, :row_ids.shape[1]] = torch.from_numpy(row_logprobs[:n])
            if unmatched is not None and row_rest is not None:  # across tokenizers: the mass left to ULD
                unmatched[b, offset:offset + n, :row_rest.shape[1]] = torch.from_numpy(row_rest[:n])
        batch[TOPK_IDS], batch[TOPK_LOGPROBS] = ids, logprobs
        if unmatched is not None:
            batch[UNMATCHED] = unmatched
        return batch
