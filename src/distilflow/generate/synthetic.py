"""Turning cached teacher answers into the synthetic data set: per-task checks, verification, de-duplication.

Accepted rows are chat form (the student's prompt plus the teacher's assistant turn) with provenance;
every rejected answer is kept in rejected.jsonl with its reason.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from distilflow.errors import StageError
from distilflow.generate.answer_size import TOO_LONG, answer_too_long, preview
from distilflow.io import write_jsonl_atomic
from distilflow.jobs.context import StageContext
from distilflow.metrics.near_duplicates import jaccard
from distilflow.tasks import Example, Task


@dataclass
class RowAnswer:
    """The answer an input's synthetic rows come from: a teacher-cache entry's samples, with what the teachers'
    combination recorded (`extra`: the teacher kept, agreement), or the reason the combination rejected the row."""

    key: str
    texts: list[str]
    extra: dict[str, Any] = field(default_factory=dict)
    rejected: str = ""

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def near_duplicate_key(text: str) -> str:
    """Case, punctuation and spacing removed: answers equal under this key are near-duplicates."""
    return _NON_WORD.sub(" ", text.lower()).strip()


# Two samples for the same prompt whose word 3-shingle sets overlap this much are near-duplicates
# (the same answer with a word or two changed teaches the student nothing new).
SHINGLE_JACCARD = 0.8


def shingles(text: str, size: int = 3) -> frozenset[tuple[str, ...]]:
    words = near_duplicate_key(text).split()
    if len(words) <= size:
        return frozenset([tuple(words)])
    return frozenset(tuple(words[i:i + size]) for i in range(len(words) - size + 1))


def choose_samples(task: Task, texts: list[str], reference: Any, verify: str,
                   max_tokens: int | None = None) -> tuple[list[int], list[str]]:
    """Indices of the usable samples, and the rejection reason of each sample (empty string when usable). A
    sample over `max_tokens` (or already cut for it) is `too_long` whatever the task says of it."""
    check_reference = verify == "reference"
    reasons = [TOO_LONG if answer_too_long(t, max_tokens) else task.check_teacher_answer(t, reference, check_reference)
               or "" for t in texts]
    usable = [i for i, r in enumerate(reasons) if not r]
    if verify == "majority" and usable:
        ranked = Counter(task.answer_key(texts[i]) for i in usable).most_common(2)
        winner = ranked[0][0]
        if len(ranked) > 1 and ranked[1][1] == ranked[0][1]:  # a tie: no answer has the most votes
            for i in usable:
                reasons[i] = "no_majority"
            return [], reasons
        chosen = next(i for i in usable if task.answer_key(texts[i]) == winner)
        for i in usable:
            if i != chosen:
                reasons[i] = "not_majority_choice" if task.answer_key(texts[i]) != winner else "majority_duplicate"
        return [chosen], reasons
    return usable, reasons


def build_synthetic(ctx: StageContext, answers_by_split: dict[str, list[RowAnswer | None]]) -> dict[str, Any]:
    """`answers_by_split`: per split, the answer of each input in order (None: failed for good, in failed.jsonl)."""
    task, verify = ctx.task, ctx.spec.generation.verify
    rejected: list[dict[str, Any]] = []
    reasons: Counter[str] = Counter()
    kept_by_teacher: Counter[str] = Counter()
    accepted_counts: dict[str, int] = {}
    for split, answers in answers_by_split.items():
        rows: list[dict[str, Any]] = []
        seen_exact: set[tuple[str, str]] = set()
        seen_near: set[tuple[str, str]] = set()
        for example, answer in zip(ctx.examples(split), answers):
            if answer is None:
                continue
            if answer.rejected:
                reasons[answer.rejected] += 1
                rejected.append({**_rejected_row(example, split, 0, answer.texts[0] if answer.texts else "",
                                                 answer.rejected), **answer.extra})
                continue
            usable, sample_reasons = choose_samples(task, answer.texts, example.reference, verify,
                                                    ctx.spec.generation.max_tokens)
            kept_shingles: list[frozenset] = []  # of this prompt's samples kept so far
            for index, text in enumerate(answer.texts):
                reason = sample_reasons[index]
                if not reason and ctx.spec.generation.deduplicate:
                    prompt = "\n".join(m["content"] for m in example.messages)
                    exact, near = (prompt, text), (near_duplicate_key(prompt), near_duplicate_key(text))
                    reason = "duplicate" if exact in seen_exact else "near_duplicate" if near in seen_near else ""
                    seen_exact.add(exact)
                    seen_near.add(near)
                    if not reason and len(answer.texts) > 1:
                        words = shingles(text)
                        if any(jaccard(words, other) >= SHINGLE_JACCARD for other in kept_shingles):
                            reason = "near_duplicate"
                        else:
                            kept_shingles.append(words)
                if reason:
                    reasons[reason] += 1
                    detail = task.rejection_detail(text, reason)  # what exactly is wrong, where the task can say
                    rejected.append({**_rejected_row(example, split, index, text, reason),
                                     **({"detail": detail} if detail else {}), **answer.extra})
                elif index in usable:
                    rows.append({**_synthetic_row(example, answer.key, index, task.training_answer(text)),
                                 **answer.extra})
                    if "teacher" in answer.extra:
                        kept_by_teacher[answer.extra["teacher"]] += 1
        write_jsonl_atomic(ctx.paths.synthetic_split(split), rows)
        accepted_counts[split] = len(rows)
    write_jsonl_atomic(ctx.paths.rejected, rejected)
    summary: dict[str, Any] = {"accepted": accepted_counts, "rejected": len(rejected),
                               "rejected_by_reason": dict(reasons)}
    if kept_by_teacher:
        summary["kept_by_teacher"] = dict(kept_by_teacher)
    if accepted_counts.get("train", 0) == 0:
        detail = ", ".join(f"{n} {r}" for r, n in reasons.most_common()) or "no answers"
        raise StageError(
            f"no verified teacher data to train on: every training answer was rejected ({detail}); "
            f"see {ctx.paths.rejected}. A stronger teacher, a teacher_prompt, or generation.verify: none may help")
    return summary


def _synthetic_row(example: Example, key: str, sample: int, text: str) -> dict[str, Any]:
    return {
        "id": example.id,
        "sample": sample,
        "teacher_key": key,  # the teacher-cache key: where this answer's stored top-k log-probs live
        "messages": [*example.messages, {"role": "assistant", "content": text}],
        "reference": example.reference,
        "source": example.provenance,
    }


def _rejected_row(example: Example, split: str, sample: int, text: str, reason: str) -> dict[str, Any]:
    return {"id": example.id, "split": split, "sample": sample, "reason": reason,
            "answer": preview(text) if reason == TOO_LONG else text,  # (a cache of an older version held it whole)
            "messages": example.messages, "reference": example.reference, "source": example.provenance}
