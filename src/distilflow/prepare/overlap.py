"""Training inputs that are near-duplicates of validation or test inputs (`data.overlap`).

A held-out figure measured on inputs the student trained on says nothing about new inputs. Every job looks for
them after its files are read: each validation and test input goes into one near-duplicate index, and each
training input is looked up in it. What is done follows `data.overlap`: drop them from training (the default;
the held-out sets stay as given), warn and keep them, or fail before any teacher request.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from distilflow.errors import DataError
from distilflow.jobspec import DataSpec
from distilflow.metrics.near_duplicates import NearDuplicateIndex, similarity
from distilflow.tasks import Example, Task

log = logging.getLogger(__name__)
HELD_OUT = ("validation", "test")
EXAMPLES_SHOWN = 5  # pairs printed and kept in the report (the count is always the whole count)


@dataclass
class OverlapFound:
    """The training inputs that near-duplicate a held-out input, and what was done with them."""

    action: str  # drop | warn | fail
    threshold: float
    pairs: list[tuple[Example, Example, float]] = field(default_factory=list)  # (training, held-out, similarity)

    @property
    def by_split(self) -> dict[str, int]:
        """Training inputs overlapping each held-out split (an input may overlap both)."""
        counts: dict[str, set[str]] = {}
        for train, held, _ in self.pairs:
            counts.setdefault(held.id.split("-", 1)[0], set()).add(train.id)
        return {split: len(ids) for split, ids in counts.items()}

    @property
    def training_ids(self) -> list[str]:
        return list(dict.fromkeys(train.id for train, _, _ in self.pairs))

    def summary(self, task: Task) -> dict[str, Any]:
        """What report.json and the report show: the count, per split, what was done and a few examples."""
        shown = []
        for train, held, score in self.pairs[:EXAMPLES_SHOWN]:
            shown.append({"training": _where(train), "held_out": _where(held), "similarity": round(score, 3),
                          "text": task.input_text(train)[:200]})
        return {"training_rows": len(self.training_ids), "by_split": self.by_split, "action": self.action,
                "threshold": self.threshold, "examples": shown}

    def message(self, task: Task) -> str:
        """The lines printed to stderr (and raised with `overlap: fail`)."""
        count = len(self.training_ids)
        splits = " and ".join(f"{n} {split}" for split, n in self.by_split.items())
        done = {"drop": "dropped from training",
                "warn": "kept in training (data.overlap: warn); held-out figures are inflated",
                "fail": "nothing was sent to the teacher (data.overlap: fail)"}[self.action]
        lines = [(f"overlap: {count} overlapping training row{'s' if count != 1 else ''} (near-duplicates of held-out "
                  f"rows: {splits}; similarity >= {self.threshold:g}): {done}")]
        for train, held, score in self.pairs[:EXAMPLES_SHOWN]:
            lines.append(f"  {_where(train)} ~ {_where(held)} ({score:.2f}): {task.input_text(train)[:80]!r}")
        if self.action == "fail":
            lines.append("  remove these rows from the training file, or set data.overlap: drop to leave them out")
        return "\n".join(lines)


def _where(example: Example) -> str:
    return f"{example.source_file}, line {example.source_line}"


def find_overlap(task: Task, examples: Mapping[str, Sequence[Example]], data: DataSpec) -> OverlapFound:
    """Every (training input, held-out input) pair at least `data.near_duplicate_threshold` similar."""
    found = OverlapFound(data.overlap, data.near_duplicate_threshold)
    index = NearDuplicateIndex(data.near_duplicate_threshold)
    held: dict[str, Example] = {}
    for split in HELD_OUT:
        for example in examples.get(split, ()):
            index.add(example.id, task.input_text(example))
            held[example.id] = example
    if not held:
        return found
    for example in examples.get("train", ()):
        text = task.input_text(example)
        for key in index.matches(text):
            found.pairs.append((example, held[key], similarity(text, task.input_text(held[key]))))
    return found


def apply_overlap(task: Task, examples: dict[str, list[Example]], found: OverlapFound) -> None:
    """Say what was found (stderr), then do what `data.overlap` asks: drop the training rows (in place), keep
    them, or raise DataError naming the rows."""
    if not found.pairs:
        return
    if found.action == "fail":
        raise DataError(found.message(task))
    log.warning("%s", found.message(task))
    if found.action == "drop":
        dropped = set(found.training_ids)
        kept = [e for e in examples["train"] if e.id not in dropped]
        if not kept:
            raise DataError(f"{examples['train'][0].source_file}: every training row near-duplicates a validation "
                            f"or test row; nothing is left to train on (data.overlap: drop)")
        examples["train"] = kept
