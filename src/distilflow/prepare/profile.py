"""What the report's data section shows of each split: rows by label, input lengths, and how varied the inputs are.

Lengths are in characters of the input as the user gave it (`Task.input_text`): exact, cheap, and the same for
every model; token counts differ by tokenizer (about 4 characters a token for English text).
Diversity is distinct word n-grams per word (distinct-1 and distinct-2, Li et al. 2016): 1.0 means no word pair
repeats; inputs written from a template or copied with small changes score low.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from distilflow.tasks import Example, Task


def length_stats(lengths: Sequence[int]) -> dict[str, float]:
    """min, median, 95th percentile and max (nearest rank) of a list of lengths."""
    ordered = sorted(lengths)
    if not ordered:
        return {}
    p95 = ordered[min(len(ordered) - 1, max(0, -(-95 * len(ordered) // 100) - 1))]
    return {"min": ordered[0], "median": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


def distinct_ngrams(texts: Sequence[str], n: int) -> float | None:
    """Distinct word n-grams over all n-grams of the texts, per word (None without words)."""
    grams: set[tuple[str, ...]] = set()
    words_total = 0
    for text in texts:
        words = text.lower().split()
        words_total += len(words)
        grams.update(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return round(len(grams) / words_total, 4) if words_total else None


def split_profile(task: Task, rows: Sequence[Example]) -> dict[str, Any]:
    texts = [task.input_text(e) for e in rows]
    profile: dict[str, Any] = {"rows": len(rows), "length_chars": length_stats([len(t) for t in texts]),
                               "distinct_1": distinct_ngrams(texts, 1), "distinct_2": distinct_ngrams(texts, 2)}
    if task.labels:  # a task of fixed answers: how the labelled rows spread over them (the balance plot)
        counts = Counter(e.reference for e in rows if e.reference is not None)
        profile["by_label"] = {label: counts.get(label, 0) for label in task.labels}
        profile["unlabelled"] = sum(e.reference is None for e in rows)
    return profile


def data_profile(task: Task, examples: Mapping[str, Sequence[Example]]) -> dict[str, dict[str, Any]]:
    """split -> its profile."""
    return {split: split_profile(task, rows) for split, rows in examples.items()}
