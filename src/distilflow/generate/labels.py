"""Teacher labels you can trust (a ranking teacher, answer_mode rank): `generation.calibration` fitted on the
teacher's stored label scores and applied to each answer and to its label distribution (the soft target sparse_kd
trains on), and the label-bias check on the teacher's answers for the training inputs (the task judges the
spread: Task.label_balance). The cache keeps the teacher's raw scores, so a change of calibration re-pays nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from distilflow.generate.ask import TeacherRun
from distilflow.generate.synthetic import RowAnswer
from distilflow.io import write_json_atomic
from distilflow.jobs.context import StageContext
from distilflow.teachers.base import TeacherAnswer
from distilflow.teachers.cache import TeacherCache
from distilflow.teachers.calibration import (best_label, calibrate, content_free_offsets, labelled_shares,
                                             prior_offsets)

log = logging.getLogger(__name__)


@dataclass
class Calibration:
    """Per-label log-offsets added to the teacher's label scores (teachers/calibration.py)."""

    method: str
    labels: list[str]
    offsets: list[float]

    def record(self) -> dict[str, Any]:
        return {"method": self.method, "labels": self.labels, "offsets": [round(o, 6) for o in self.offsets]}


def label_scores(answer: TeacherAnswer | None, labels: Sequence[str]) -> list[float] | None:
    """A ranking teacher's stored log-probability of each label (None: the answer holds no scores of these labels)."""
    if answer is None or not answer.top_logprobs:
        return None
    top = answer.top_logprobs[0]
    if not top.tokens or len(top.logprobs) != 1 or list(top.tokens[0]) != list(labels):
        return None
    return list(top.logprobs[0])


def fit_calibration(ctx: StageContext, cache: TeacherCache, run: TeacherRun) -> Calibration | None:
    """The job's calibration from the cached scores (content_free: of the content-free inputs; prior: of every input
    the teacher answered, against the labelled training rows' shares); None when it calibrates nothing."""
    method, labels = ctx.spec.label_calibration, list(run.plan.params.choices)
    if method == "none" or not labels:
        return None
    keys = [r.key for r in run.plan.extra] if method == "content_free" else list(dict.fromkeys(
        r.key for r in run.plan.requests.values()))
    scores = [s for s in (label_scores(cache.get(k, with_logprobs=True), labels) for k in keys) if s is not None]
    if not scores:
        log.warning("generation.calibration %s: the teacher stored no label scores to fit it on; its answers are "
                    "used as they are", method)
        return None
    if method == "content_free":
        return Calibration(method, labels, content_free_offsets(scores))
    shares = labelled_shares(labels, [e.reference for e in ctx.examples("train")])
    return Calibration(method, labels, prior_offsets(scores, shares))


def save_calibration(ctx: StageContext, calibration: Calibration | None) -> None:
    """Where evaluation finds it (the teacher is scored with the labels it taught); removed when there is none."""
    if calibration is None:
        ctx.paths.calibration.unlink(missing_ok=True)
    else:
        write_json_atomic(ctx.paths.calibration, calibration.record())


def calibrated(answer: TeacherAnswer, calibration: Calibration | None) -> RowAnswer:
    """An input's answer as the student learns it: with a calibration, the best calibrated label and the calibrated
    label log-probs (`label_logprobs` on its synthetic row: sparse_kd's target); otherwise the stored answer."""
    scores = label_scores(answer, calibration.labels) if calibration is not None else None
    if calibration is None or scores is None:
        return RowAnswer(answer.key, answer.texts)
    logprobs = calibrate(scores, calibration.offsets)
    return RowAnswer(answer.key, [calibration.labels[best_label(logprobs)]],
                     {"label_logprobs": [round(lp, 6) for lp in logprobs]})


def label_balance(ctx: StageContext, answers: Sequence[RowAnswer | None],
                  before: Sequence[RowAnswer | None] = ()) -> dict[str, Any] | None:
    """The label-bias check on the teacher's answers for the training inputs (`answers`, in order) against the
    labelled training rows; warns on stderr where it fires, before anything trains on them. `before`: the answers
    before calibration, whose figures are kept beside (they show what calibration changed)."""
    task = ctx.task
    references = [e.reference for e in ctx.examples("train")]
    balance = task.label_balance(_labels(ctx, answers), references)
    if balance is None:
        return None
    if before:
        balance["before_calibration"] = task.label_balance(_labels(ctx, before), references)
    if balance["biased"]:
        balance["warning"] = bias_sentence(balance)  # the report shows it at its top
        log.warning("%s", balance["warning"])
    return balance


def _labels(ctx: StageContext, answers: Sequence[RowAnswer | None]) -> list[str | None]:
    return [ctx.task.extract_answer(a.texts[0]) if a is not None and a.texts and not a.rejected else None
            for a in answers]


def bias_sentence(balance: dict[str, Any]) -> str:
    """The warning, in stderr and at the top of the report."""
    return (f"Warning: the teacher's labels are spread far from the labelled rows': it gave "
            f"{balance['top_label']} to {balance['top_share']:.0%} of the training inputs (labelled rows: "
            f"{balance['top_labelled_share']:.0%}); total variation distance {balance['distance']:.2f} > "
            f"{balance['threshold']:.2f}. The student will learn this bias: try generation.calibration "
            f"(content_free or prior), generation.few_shot_order, more shots, or a stronger teacher.")
