"""What a judge is asked, before anything is asked: one JudgeItem per request (pairwise in both orders, rubric,
and the controls), each with its cache key, from the test inputs and the answers the models gave to them.

Used by the judge run (judge.py) and by the dry run (judge_estimate.py): both build the same requests, so the dry
run knows which are in the cache already.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from distilflow.evaluate.controls import CORRUPTIONS, control_ids, corrupted
from distilflow.evaluate.judge_wire import (Reading, pairwise_messages, read_pairwise, read_rubric, rubric_messages,
                                            task_input_text)
from distilflow.jobspec import JudgeSpec
from distilflow.models import GenerationParams, Message
from distilflow.tasks import Example, Task
from distilflow.teachers.base import request_fingerprint

STUDENTS = ("baseline", "distilled")  # each judged against the teacher, pairwise
REFERENCE = "teacher"
SELF, CONTROL = "control:self", "control:"


@dataclass
class JudgeItem:
    """One judge request: which answer it judges (`group`: a model label, or a control), for which test input,
    in which order (pairwise: 0 = the judged answer is A, 1 = it is B), and the reply once known."""

    kind: str  # "pairwise" | "rubric"
    group: str  # "distilled", "baseline", "teacher" (rubric), "control:self", "control:shuffled", ...
    example_id: str
    order: int
    messages: list[Message]
    retry_messages: list[Message]
    key: str = ""
    retry_key: str = ""
    replies: list[str] = field(default_factory=list)  # the reply, and the retry's when the first was unreadable

    def read(self, reply: str) -> Reading:
        return read_pairwise(reply) if self.kind == "pairwise" else read_rubric(reply)

    @property
    def reading(self) -> Reading | None:
        """The last reply read (None before any reply)."""
        return self.read(self.replies[-1]) if self.replies else None

    @property
    def outcome(self) -> str | None:
        """Pairwise: the judged answer's outcome in this order ("win", "loss", "tie"); None when unreadable."""
        reading = self.reading
        if reading is None or reading.verdict is None:
            return None
        if reading.verdict == "tie":
            return "tie"
        first_wins = reading.verdict == "A"
        return "win" if first_wins == (self.order == 0) else "loss"


def judge_params(judge: JudgeSpec) -> GenerationParams:
    return GenerationParams(max_tokens=judge.max_tokens, temperature=judge.temperature, seed=0)


def judge_identity(backend_identity: dict[str, Any]) -> dict[str, Any]:
    """The cache key's model part: the backend's identity, marked as a judge's (a judge reply never passes for a
    teacher answer to the same text)."""
    return {"role": "judge", **backend_identity}


def _pairwise(group: str, example_id: str, task_input: str, judged: str, reference: str,
              rubric: str) -> list[JudgeItem]:
    items = []
    for order, (a, b) in enumerate(((judged, reference), (reference, judged))):
        items.append(JudgeItem("pairwise", group, example_id, order, pairwise_messages(task_input, a, b, rubric),
                               pairwise_messages(task_input, a, b, rubric, retry=True)))
    return items


def _rubric(group: str, example_id: str, task_input: str, answer: str, rubric: str) -> JudgeItem:
    return JudgeItem("rubric", group, example_id, 0, rubric_messages(task_input, answer, rubric),
                     rubric_messages(task_input, answer, rubric, retry=True))


def plan_items(judge: JudgeSpec, task: Task, examples: Sequence[Example],
               answers: Mapping[str, Mapping[str, str]]) -> tuple[list[JudgeItem], list[str]]:
    """Every request of one judge, and the ids of its control inputs. `answers`: model label -> example id ->
    answer (the models that answered; a failed answer is left out, and so is its pair)."""
    rubric = judge.rubric or task.judge_rubric
    chosen = list(examples)[:judge.max_examples] if judge.max_examples else list(examples)
    inputs = {e.id: task_input_text(e.messages) for e in chosen}
    teacher = answers.get(REFERENCE) or {}
    reference = teacher or next(iter(answers.values()), {})  # what the controls corrupt: the teacher's answers
    items: list[JudgeItem] = []
    if judge.mode in ("pairwise", "both") and teacher:  # no teacher answers (not evaluated): nothing to compare
        for group in (g for g in STUDENTS if g in answers):
            items += [i for e in chosen if e.id in answers[group] and e.id in reference
                      for i in _pairwise(group, e.id, inputs[e.id], answers[group][e.id], reference[e.id], rubric)]
    if judge.mode in ("rubric", "both"):
        items += [_rubric(label, e.id, inputs[e.id], answers[label][e.id], rubric)
                  for label in answers for e in chosen if e.id in answers[label]]
    controls = control_ids({i: reference[i] for i in inputs if i in reference}, judge.controls)
    for example_id in controls:
        original = reference[example_id]
        copies = {kind: corrupted(original, kind, example_id) for kind in CORRUPTIONS}
        if judge.mode in ("pairwise", "both"):
            items += _pairwise(SELF, example_id, inputs[example_id], original, original, rubric)
            for kind, copy in copies.items():
                items += _pairwise(CONTROL + kind, example_id, inputs[example_id], copy, original, rubric)
        if judge.mode in ("rubric", "both"):
            items.append(_rubric(CONTROL + "original", example_id, inputs[example_id], original, rubric))
            items += [_rubric(CONTROL + kind, example_id, inputs[example_id], copy, rubric)
                      for kind, copy in copies.items()]
    return items, controls


def with_keys(items: list[JudgeItem], identity: dict[str, Any], params: GenerationParams) -> list[JudgeItem]:
    """Each item's cache key, and its retry's: what determines the reply (judge, request text, parameters)."""
    for item in items:
        item.key = request_fingerprint(identity, item.messages, params)
        item.retry_key = request_fingerprint(identity, item.retry_messages, params)
    return items
