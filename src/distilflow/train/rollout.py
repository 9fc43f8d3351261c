"""on_policy's batch surgery: take a training batch (prompt + the teacher's stored answer, right-padded, labels on
the answer), let the current student answer some of its prompts, and build the batch the loss sees: each row its
prompt followed by either the student's sample or the stored answer, labels on the answer tokens only (never on
the prompt or on padding), right-padded again.

Sampling is the student's own `generate` (KV cache, the chosen rows batched together, left-padded as decoder-only
generation needs), pure sampling at `student_temperature` (no top-k / top-p truncation: the loss compares the
student's full distribution, so the samples must come from it, as in GKD). A sample ends at the first end-of-turn
token, which is kept (the student learns when to stop) or at `student_max_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

IGNORE = -100


@dataclass(frozen=True)
class OnPolicySettings:
    ratio: float  # share of each batch's rows whose answers the student samples, once warmed up
    temperature: float
    max_tokens: int
    max_length: int  # training.max_seq_length: a row never grows past it
    warmup: float = 0.0  # share of the training steps over which the sampled share rises from 0 to `ratio`

    def ratio_at(self, step: int, max_steps: int) -> float:
        """The sampled share at this optimizer step: a linear ramp over the first `warmup` of the steps. An untrained
        student's samples are noise the teacher can only say "not this" about; its stored answers teach first."""
        ramp = self.warmup * max_steps
        return self.ratio if ramp <= 0 else self.ratio * min(1.0, step / ramp)


def answer_starts(labels: torch.Tensor) -> torch.Tensor:
    """Per row, the index of the first labelled token (the answer's start; the row's width when none)."""
    labelled = labels != IGNORE
    first = labelled.int().argmax(dim=1)
    return torch.where(labelled.any(dim=1), first, torch.full_like(first, labels.shape[1]))


def rows_to_sample(batch_size: int, ratio: float, starts: torch.Tensor, width: int) -> list[int]:
    """Which rows the student answers: round(ratio * rows) of them in expectation (the fraction by a coin), drawn
    with torch's generator so that a resumed training (the Trainer restores RNG states) draws the same rows."""
    eligible = [b for b in range(batch_size) if int(starts[b]) < width]  # a prompt cut at max length: nothing to do
    if not eligible or ratio <= 0:
        return []
    expected = ratio * len(eligible)
    count = int(expected) + int(torch.rand(()).item() < expected - int(expected))
    order = torch.randperm(len(eligible)).tolist()
    return sorted(eligible[i] for i in order[:count])


def left_padded_prompts(input_ids: torch.Tensor, starts: torch.Tensor, rows: list[int],
                        pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts of `rows`, left-padded (generation appends on the right), and their attention mask."""
    lengths = [int(starts[b]) for b in rows]
    width = max(lengths)
    ids = torch.full((len(rows), width), pad_id, dtype=input_ids.dtype, device=input_ids.device)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=input_ids.device)
    for i, (b, n) in enumerate(zip(rows, lengths)):
        ids[i, width - n:] = input_ids[b, :n]
        mask[i, width - n:] = 1
    return ids, mask


def cut_completions(sequences: torch.Tensor, prompt_width: int, stop_ids: set[int]) -> list[list[int]]:
    """The generated tokens of each row, through the first stop token (kept), padding after it dropped."""
    completions = []
    for row in sequences[:, prompt_width:].tolist():
        end = next((i + 1 for i, token in enumerate(row) if token in stop_ids), len(row))
        completions.append(row[:end])
    return completions


def sample_answers(model: Any, input_ids: torch.Tensor, starts: torch.Tensor, rows: list[int],
                   settings: OnPolicySettings, pad_id: int, stop_ids: set[int]) -> list[list[int]]:
    """The student's answers to the prompts of `rows` (one batched generate call with a KV cache)."""
    prompts, mask = left_padded_prompts(input_ids, starts, rows, pad_id)
    room = settings.max_length - prompts.shape[1]
    with torch.no_grad():
        sequences = model.generate(
            input_ids=prompts, attention_mask=mask, do_sample=True, temperature=settings.temperature, top_k=0,
            top_p=1.0, max_new_tokens=max(1, min(settings.max_tokens, room)), pad_token_id=pad_id,
            eos_token_id=sorted(stop_ids), use_cache=True)
    return cut_completions(sequences, prompts.shape[1], stop_ids)


def assemble(prompts: list[list[int]], answers: list[list[int]], pad_id: int, max_length: int,
             device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """Right-padded input_ids / attention_mask / labels of prompt + answer rows; labels on the answer only."""
    rows = [(p + a)[:max_length] for p, a in zip(prompts, answers)]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for b, (row, prompt) in enumerate(zip(rows, prompts)):
        input_ids[b, :len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[b, :len(row)] = 1
        labels[b, len(prompt):len(row)] = input_ids[b, len(prompt):len(row)]
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


def mix_answers(batch: dict[str, torch.Tensor], sampled: dict[int, list[int]], pad_id: int,
                max_length: int) -> dict[str, torch.Tensor]:
    """The batch with the stored answers of the rows in `sampled` replaced by those samples."""
    input_ids, labels = batch["input_ids"], batch["labels"]
    starts = answer_starts(labels)
    lengths = batch["attention_mask"].sum(1) if "attention_mask" in batch else (input_ids != pad_id).sum(1)
    prompts, answers = [], []
    for b in range(input_ids.shape[0]):
        start, end = int(starts[b]), int(lengths[b])
        prompts.append(input_ids[b, :start].tolist())
        answers.append(sampled[b] if b in sampled else input_ids[b, start:end].tolist())
    mixed = assemble(prompts, answers, pad_id, max_length, device=input_ids.device)
    return {**{k: v for k, v in batch.items() if k not in mixed}, **mixed}
