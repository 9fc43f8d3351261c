"""Answering by ranking: the log-likelihood of each allowed answer (a label) after a prompt, for teacher and
student alike, as lm-eval scores multiple choice. The answer is always one of the labels, and it takes one forward
pass instead of a generation loop.

When the labels start with different tokens (the usual case: " activate", " age", " cancel", ...), a label's
score is the log-probability of its first token: one forward pass over the prompt gives every label's score, and
the rest of a label is then determined. Otherwise every label's whole continuation is scored.

A prompt prefix that every request shares (a many-shot block) is run once and its key/value cache reused for
every request (`PrefixCache`): a teacher's 1,000-token few-shot prefix then costs nothing per message, which is
how a serving system runs such a prompt. Written here because transformers' generate() reuses a cache for one
sequence at a time only; scoring batches of suffixes after one shared prefix needs the cache expanded and cut
back, a few lines with DynamicCache.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

LABEL_SCORING_BATCH = 16  # prompts per forward pass


@dataclass
class LabelScores:
    """Per prompt: each label's log-probability (full-vocabulary log-softmax, so the rest of the mass is what the
    model gives to anything else), and the index of the best label."""

    logprobs: list[list[float]]
    best: list[int]
    prompt_tokens: list[int]


def label_token_ids(tokenizer: Any, continuations: list[str]) -> list[list[int]]:
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in continuations]


def _cache_argument(model: Any) -> str:
    """transformers 5 renames `past_key_values` to `cache`; use whichever this version's forward takes."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class PrefixCache:
    """The key/value cache of a token prefix, computed once; `forward(suffix_ids, mask)` runs suffixes after it.

    Suffixes are left-padded; position ids are given explicitly so padding never shifts a real token's position,
    and the cache is cut back to the prefix after each call (no copy of the prefix per request).
    """

    def __init__(self, model: Any, prefix_ids: list[int]) -> None:
        import torch
        from transformers import DynamicCache

        self.model, self.length = model, len(prefix_ids)
        self._argument = _cache_argument(model)
        self._base = DynamicCache()
        with torch.inference_mode():
            model(input_ids=torch.tensor([prefix_ids], device=model.device), use_cache=True,
                  **{self._argument: self._base})
        self._expanded: dict[int, Any] = {}

    def _for_batch(self, size: int) -> Any:
        import copy

        if size not in self._expanded:
            cache = copy.deepcopy(self._base)
            if size > 1:
                cache.batch_repeat_interleave(size)
            self._expanded[size] = cache
        return self._expanded[size]

    def last_logits(self, suffix_ids: Any, suffix_mask: Any) -> Any:
        """Next-token logits after each (left-padded) suffix, [batch, vocab]."""
        return self.logits(suffix_ids, suffix_mask, 1)[:, -1, :]

    def logits(self, suffix_ids: Any, suffix_mask: Any, keep: int) -> Any:
        """Next-token logits at the last `keep` positions of each (left-padded) suffix, [batch, keep, vocab]."""
        import torch

        batch = suffix_ids.shape[0]
        cache = self._for_batch(batch)
        prefix_mask = torch.ones((batch, self.length), dtype=suffix_mask.dtype, device=suffix_mask.device)
        positions = self.length + (suffix_mask.cumsum(-1) - 1).clamp(min=0)
        try:
            with torch.inference_mode():
                out = self.model(input_ids=suffix_ids, attention_mask=torch.cat([prefix_mask, suffix_mask], dim=1),
                                 position_ids=positions, use_cache=True, logits_to_keep=keep,
                                 **{self._argument: cache})
        finally:
            self._crop(cache)
        return out.logits


    def hidden_states(self, input_ids: Any, attention_mask: Any) -> Any:
        """The backbone's last hidden states of right-padded rows read after the prefix, [batch, length, hidden]
        (the teacher side of context distillation: it reads its few-shot block, the student does not)."""
        import torch

        batch = input_ids.shape[0]
        cache = self._for_batch(batch)
        prefix_mask = torch.ones((batch, self.length), dtype=attention_mask.dtype, device=attention_mask.device)
        positions = self.length + torch.arange(input_ids.shape[1], device=input_ids.device).expand(batch, -1)
        backbone = self.model.base_model
        try:
            with torch.no_grad():
                out = backbone(input_ids=input_ids, attention_mask=torch.cat([prefix_mask, attention_mask], dim=1),
                               position_ids=positions, use_cache=True, **{_cache_argument(backbone): cache})
        finally:
            self._crop(cache)
        return out.last_hidden_state

    def _crop(self, cache: Any) -> None:
        """Back to the prefix (a negative crop removes that many tokens, in every transformers 5)."""
        added = cache.get_seq_length() - self.length
        if added > 0:
            cache.crop(-added)


def shared_prefix(token_lists: list[list[int]], keep_last: int = 1) -> list[int]:
    """The longest token prefix all prompts share, minus `keep_last` tokens (every prompt keeps a suffix)."""
    if not token_lists:
        return []
    first = token_lists[0]
    length = min(len(t) for t in token_lists)
    for tokens in token_lists[1:]:
        length = next((i for i in range(length) if tokens[i] != first[i]), length)
    return first[:max(0, length - keep_last)]


def score_labels(model: Any, tokenizer: Any, prompts: list[str], continuations: list[str],
                 prefix: PrefixCache | None = None) -> LabelScores:
    """Every continuation's log-probability after every prompt (continuations: each label as it follows the
    prompt, e.g. " activate_my_card" in completion format)."""
    label_ids = label_token_ids(tokenizer, continuations)
    first = [ids[0] for ids in label_ids]
    if len(set(first)) < len(first):
        return _score_full_continuations(model, tokenizer, prompts, label_ids, prefix)
    logprobs, lengths = [], []
    for start in range(0, len(prompts), LABEL_SCORING_BATCH):
        batch_logits, batch_lengths = _last_logits(model, tokenizer, prompts[start:start + LABEL_SCORING_BATCH],
                                                   prefix)
        logprobs += batch_logits.float().log_softmax(-1)[:, first].tolist()
        lengths += batch_lengths
    return LabelScores(logprobs, [max(range(len(row)), key=row.__getitem__) for row in logprobs], lengths)


def _last_logits(model: Any, tokenizer: Any, prompts: list[str], prefix: PrefixCache | None) -> tuple[Any, list[int]]:
    import torch

    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    lengths = [len(i) for i in ids]
    if prefix is not None:
        ids = [i[prefix.length:] for i in ids]
    width = max(len(i) for i in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.tensor([[pad] * (width - len(i)) + i for i in ids], device=model.device)
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids], device=model.device)
    if prefix is not None:
        return prefix.last_logits(input_ids, mask), lengths
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, logits_to_keep=1)
    return out.logits[:, -1, :], lengths


def _score_full_continuations(model: Any, tokenizer: Any, prompts: list[str], label_ids: list[list[int]],
                              prefix: PrefixCache | None) -> LabelScores:
    """Labels sharing a first token: score each whole continuation (prompt + label, one row per label); after the
    shared prefix's cache where there is one (each row is then the prompt's own tokens and the label)."""
    import torch

    logprobs, lengths = [], []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    keep = max(len(ids) for ids in label_ids) + 1
    for prompt in prompts:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        lengths.append(len(prompt_ids))
        own = prompt_ids[prefix.length:] if prefix is not None else prompt_ids
        rows = [own + ids for ids in label_ids]
        width = max(len(r) for r in rows)
        # Left-padded: every row ends at the last column, so label token j of a label of n tokens is at column
        # width - n + j, predicted by the logits one column before it.
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=model.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=model.device)
        if prefix is not None:
            logits = prefix.logits(input_ids, mask, min(keep, width))
        else:
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                               logits_to_keep=min(keep, width)).logits
        log_probs = logits.float().log_softmax(-1)
        kept = log_probs.shape[1]
        logprobs.append([sum(float(log_probs[row, kept - len(ids) + j - 1, token]) for j, token in enumerate(ids))
                         for row, ids in enumerate(label_ids)])
    return LabelScores(logprobs, [max(range(len(row)), key=row.__getitem__) for row in logprobs], lengths)
