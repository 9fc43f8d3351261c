"""A judge's replies -> its figures: per student win / tie / loss against the teacher (a win or a loss only when both
orders agree; anything else is a tie, and ties are never counted as wins or as retained), rubric means, judged
retention (the distilled student's mean score over the teacher's), the controls, and examples with the reasons.
Several judges: Cohen's kappa between each two of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

from distilflow.evaluate.controls import CORRUPTIONS, control_figures
from distilflow.evaluate.judge_plan import CONTROL, REFERENCE, SELF, STUDENTS, JudgeItem
from distilflow.metrics.judged import cohen_kappa, mean_interval, ratio_interval, share_intervals

OUTCOMES = ("win", "tie", "loss")


def combined(first: str | None, second: str | None) -> str:
    """One pair's outcome from its two orders: a win or a loss only when both say so; "unreadable" when either
    reply could not be read."""
    if first is None or second is None:
        return "unreadable"
    return first if first == second and first in ("win", "loss") else "tie"


def _by_example(items: Sequence[JudgeItem], kind: str, group: str) -> dict[str, list[JudgeItem]]:
    found: dict[str, list[JudgeItem]] = {}
    for item in items:
        if item.kind == kind and item.group == group:
            found.setdefault(item.example_id, []).append(item)
    return found


def pair_outcomes(items: Sequence[JudgeItem], group: str) -> dict[str, str]:
    """Example id -> the pair's outcome ("win", "tie", "loss", "unreadable", or "missing": a request that failed)."""
    out = {}
    for example_id, pair in _by_example(items, "pairwise", group).items():
        if any(not i.replies for i in pair):
            out[example_id] = "missing"
            continue
        ordered = sorted(pair, key=lambda i: i.order)
        out[example_id] = combined(ordered[0].outcome, ordered[1].outcome)
    return out


def rubric_scores(items: Sequence[JudgeItem], group: str) -> dict[str, float | None]:
    """Example id -> the score (None: unreadable); a request that failed is left out."""
    return {i.example_id: i.reading.score for i in items  # type: ignore[union-attr]
            if i.kind == "rubric" and i.group == group and i.replies}


def _pairwise_figures(outcomes: Mapping[str, str], samples: int, seed: int) -> dict[str, Any]:
    readable = [o for o in outcomes.values() if o in OUTCOMES]
    return {"against": REFERENCE, **share_intervals(readable, OUTCOMES, samples, seed),
            "unreadable": sum(o == "unreadable" for o in outcomes.values()),
            "missing": sum(o == "missing" for o in outcomes.values())}


def _rubric_figures(scores: Mapping[str, float | None], samples: int, seed: int) -> dict[str, Any]:
    readable = [s for s in scores.values() if s is not None]
    interval = mean_interval(readable, samples, seed)
    return {"mean": interval["value"], "low": interval["low"], "high": interval["high"], "n": len(readable),
            "unreadable": len(scores) - len(readable)}


def _controls(items: Sequence[JudgeItem], controls: Sequence[str]) -> dict[str, Any]:
    self_verdicts = [i.reading.verdict for i in items if i.group == SELF and i.replies  # type: ignore[union-attr]
                     and i.reading.readable]  # type: ignore[union-attr]
    corrupted = {kind: [o for o in pair_outcomes(items, CONTROL + kind).values() if o in OUTCOMES]
                 for kind in CORRUPTIONS if any(i.group == CONTROL + kind and i.kind == "pairwise" for i in items)}
    groups = {i.group for i in items if i.kind == "pairwise"}
    flips = []
    for group in groups:
        for pair in _by_example(items, "pairwise", group).values():
            outcomes = [i.outcome for i in sorted(pair, key=lambda i: i.order) if i.replies]
            if len(outcomes) == 2 and None not in outcomes:
                flips.append(outcomes[0] != outcomes[1])
    originals = rubric_scores(items, CONTROL + "original")
    lower = [score < originals[example_id]
             for kind in CORRUPTIONS for example_id, score in rubric_scores(items, CONTROL + kind).items()
             if score is not None and originals.get(example_id) is not None]
    answered = [i for i in items if i.replies]
    unreadable = sum(not i.reading.readable for i in answered)  # type: ignore[union-attr]
    return control_figures(self_verdicts, corrupted, flips, lower, unreadable, len(answered), len(controls))


def judge_figures(judge_name: str, mode: str, items: Sequence[JudgeItem], controls: Sequence[str],
                  labels: Sequence[str], samples: int, seed: int) -> dict[str, Any]:
    """Every figure of one judge (report.json's `judge`); `labels`: the models that answered, in report order."""
    models: dict[str, dict[str, Any]] = {}
    for group in STUDENTS:
        outcomes = pair_outcomes(items, group)
        if outcomes:
            models.setdefault(group, {}).update(_pairwise_figures(outcomes, samples, seed))
    retention = {}
    teacher_scores = rubric_scores(items, REFERENCE)
    for label in labels:
        scores = rubric_scores(items, label)
        if not scores:
            continue
        models.setdefault(label, {})["rubric"] = _rubric_figures(scores, samples, seed)
        if label != REFERENCE and teacher_scores:
            pairs = [(s, teacher_scores[e]) for e, s in scores.items()
                     if s is not None and teacher_scores.get(e) is not None]
            retention[label] = ratio_interval(pairs, samples, seed)
    return {"name": judge_name, "mode": mode, "models": models, "retention": retention,
            "controls": _controls(items, controls), "control_inputs": list(controls)}


def judge_examples(items: Sequence[JudgeItem], example_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The first test inputs with each judged answer's verdicts (both orders) or scores, and the judge's reasons."""
    rows = []
    for example_id in example_ids:
        judged: dict[str, Any] = {}
        for item in items:
            if item.example_id != example_id or item.group.startswith(CONTROL) or not item.replies:
                continue
            entry = judged.setdefault(item.group, {})
            reading = item.reading
            assert reading is not None
            if item.kind == "pairwise":
                entry.setdefault("orders", []).append({"order": item.order, "outcome": item.outcome,
                                                       "reason": reading.reason})
            else:
                entry["score"], entry["score_reason"] = reading.score, reading.reason
        for group, entry in judged.items():
            if len(entry.get("orders", [])) == 2:
                first, second = sorted(entry["orders"], key=lambda o: o["order"])
                entry["outcome"] = combined(first["outcome"], second["outcome"])
        if judged:
            rows.append({"id": example_id, "judged": judged})
    return rows


def judge_agreement(categories: Mapping[str, Mapping[tuple[str, str], Any]]) -> list[dict[str, Any]]:
    """Cohen's kappa of each two judges over the items both could read: `categories`: judge -> (kind, label,
    example) -> its outcome or score."""
    out = []
    for first, second in combinations(categories, 2):
        for kind in ("pairwise", "rubric"):
            common = [k for k in categories[first] if k[0] == kind and k in categories[second]]
            if common:
                out.append({"judges": [first, second], "kind": kind, "n": len(common),
                            "kappa": cohen_kappa([categories[first][k] for k in common],
                                                 [categories[second][k] for k in common])})
    return out


def judged_categories(items: Sequence[JudgeItem], labels: Sequence[str]) -> dict[tuple[str, str], Any]:
    """(kind|label, example) -> outcome or score, over the readable items of the models (not the controls)."""
    found: dict[Any, Any] = {}
    for group in STUDENTS:
        for example_id, outcome in pair_outcomes(items, group).items():
            if outcome in OUTCOMES:
                found[("pairwise", f"{group}/{example_id}")] = outcome
    for label in labels:
        for example_id, score in rubric_scores(items, label).items():
            if score is not None:
                found[("rubric", f"{label}/{example_id}")] = score
    return found
