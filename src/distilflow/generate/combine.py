"""Several teachers' answers to one input become one (generation.combine): the rules, without any I/O.

- vote: the answer most of the teachers' weight agrees on (same label / number / extracted answer); free text has
  no such key, so the answer closest to the others by chrF is kept. A keyed input without a majority is rejected.
- best_of: the first teacher (in list order) whose answer passes the task's checks (the cascade asks the next
  teacher only where the one before it failed or was rejected).
- route: the teacher a per-row rule picks (a field value of the row, or a regular expression on its input).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from distilflow.generate.synthetic import choose_samples
from distilflow.metrics.text import sentence_chrf
from distilflow.jobspec import TeamTeacherSpec
from distilflow.tasks import Example, Task


@dataclass
class Vote:
    """One teacher's answer to one input (`text` None: it has none, e.g. the request failed)."""

    teacher: str
    weight: float
    key: str  # its teacher-cache key
    texts: list[str] | None


def input_text(example: Example) -> str:
    """What a route pattern is searched in: the input's user and assistant turns."""
    return "\n".join(m["content"] for m in example.messages if m["role"] != "system")


def route_of(example: Example, teachers: Sequence[TeamTeacherSpec]) -> int | None:
    """The index of the teacher that answers `example`: the first whose rule matches, else the first without a
    rule (the fallback), else None (the row is rejected: no_route)."""
    fallback = None
    for index, teacher in enumerate(teachers):
        rule = teacher.route
        if rule is None:
            fallback = index if fallback is None else fallback
        elif rule.field is not None:
            if rule.field in example.fields and str(example.fields[rule.field]) in rule.values:
                return index
        elif rule.pattern is not None and re.search(rule.pattern, input_text(example)):
            return index
    return fallback


def passes(task: Task, texts: list[str] | None, reference: Any, verify: str) -> bool:
    """Whether an answer would be kept by the task's checks (the cascade's test)."""
    return bool(texts) and bool(choose_samples(task, texts or [], reference, verify)[0])


def similarity(task: Task, a: str, b: str) -> float:
    """How much two answers agree, 0-1: the same extracted answer (1 or 0), or chrF / 100 for free text."""
    if task.free_text:
        return sentence_chrf(a, [b]) / 100.0
    key = task.answer_key(a)
    return float(key is not None and key == task.answer_key(b))


def vote(task: Task, votes: list[Vote]) -> tuple[Vote | None, dict[str, Any]]:
    """The kept vote (None: no majority) and what is recorded on the row: the teacher kept, the agreement
    (the share of the answering teachers' weight that agrees with it; for free text its weighted mean chrF to
    the others) and each teacher's answer key."""
    answered = [v for v in votes if v.texts]
    if not answered:
        return None, {}
    if task.free_text:
        return _closest(task, answered)
    keys = [task.answer_key(v.texts[0]) for v in answered]  # type: ignore[index]
    weights: dict[str, float] = {}
    for v, key in zip(answered, keys):
        if key is not None:
            weights[key] = weights.get(key, 0.0) + v.weight
    total = sum(v.weight for v in answered)
    record: dict[str, Any] = {"votes": {v.teacher: key for v, key in zip(answered, keys)}}
    if not weights:
        return None, record
    winner = max(weights, key=lambda k: weights[k])  # first-listed teacher's key on a tie (dict order)
    record["agreement"] = round(weights[winner] / total, 4)
    if weights[winner] * 2 <= total:  # no answer holds more than half of the weight
        return None, record
    kept = next(v for v, key in zip(answered, keys) if key == winner)
    return kept, {**record, "teacher": kept.teacher}


def _closest(task: Task, answered: list[Vote]) -> tuple[Vote, dict[str, Any]]:
    """Free text: the answer with the highest weighted mean chrF to the other teachers' answers."""
    if len(answered) == 1:
        return answered[0], {"teacher": answered[0].teacher}
    scores = []
    for v in answered:
        others = [(o.weight, similarity(task, v.texts[0], o.texts[0])) for o in answered if o is not v]  # type: ignore[index]
        scores.append(sum(w * s for w, s in others) / sum(w for w, _ in others))
    best = max(range(len(answered)), key=lambda i: scores[i])
    record = {"teacher": answered[best].teacher, "agreement": round(scores[best], 4),
              "votes": {v.teacher: round(s, 4) for v, s in zip(answered, scores)}}
    return answered[best], record


class AgreementMatrix:
    """Pairwise agreement of the teachers over the inputs both answered (similarity above, averaged)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.sums: dict[tuple[str, str], float] = {}
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, task: Task, votes: list[Vote]) -> None:
        answered = [v for v in votes if v.texts]
        for i, a in enumerate(answered):
            for b in answered[i + 1:]:
                pair = (a.teacher, b.teacher)
                self.sums[pair] = self.sums.get(pair, 0.0) + similarity(task, a.texts[0], b.texts[0])  # type: ignore[index]
                self.counts[pair] = self.counts.get(pair, 0) + 1

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """{a: {b: {"agreement", "n"}}} for every pair (both ways) that answered a common input."""
        out: dict[str, dict[str, Any]] = {name: {} for name in self.names}
        for (a, b), n in self.counts.items():
            cell = {"agreement": round(self.sums[(a, b)] / n, 4), "n": n}
            out[a][b] = out[b][a] = cell
        return out
