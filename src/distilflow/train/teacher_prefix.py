"""Context distillation's shared piece: the tokens a local teacher reads before the student's prompt (its few-shot
block and instructions). Used by the methods whose teacher scores the student's tokens (kd, on_policy), so that
they share it without importing each other."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from distilflow.dist import is_main_process

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext

log = logging.getLogger(__name__)


def teacher_view(ctx: "StageContext") -> Callable[[list[dict[str, str]]], list[dict[str, str]]]:
    """A training row's messages -> what the teacher read for it in the teacher stage (its instructions and
    few-shot block before the student's prompt), with the row's answer last."""
    from distilflow.tasks import Example
    from distilflow.teachers.requests import teacher_messages, teacher_plan

    _, shots = teacher_plan(ctx.spec, ctx.task, ctx.examples("train"))
    return lambda messages: [*teacher_messages(Example(id="", messages=messages[:-1]), ctx.spec, shots),
                             messages[-1]]


def teacher_prefix_ids(ctx: "StageContext", tokenizer: Any, row: dict[str, Any]) -> list[int] | None:
    """Context distillation: what the teacher reads before the student's prompt (its few-shot block and
    instructions), as tokens, when teacher and student read plain text (completion format). The teacher then sees
    prefix + the student's tokens, and its answer distribution is the one it gave in the teacher stage."""
    from distilflow.models.prompts import render_completion

    spec = ctx.spec
    if spec.teacher.prompt_format != "completion" or spec.student.prompt_format != "completion":
        return None
    student_text = render_completion(row["messages"][:-1])
    teacher_text = render_completion(teacher_view(ctx)(row["messages"])[:-1])
    if teacher_text == student_text or not teacher_text.endswith(student_text):
        return None
    prefix = tokenizer(teacher_text[:-len(student_text)], add_special_tokens=False)["input_ids"]
    if prefix + tokenizer(student_text, add_special_tokens=False)["input_ids"] != \
            tokenizer(teacher_text, add_special_tokens=False)["input_ids"]:
        log.warning("the teacher's prefix does not end on a token boundary; the teacher reads the student's "
                    "prompt alone")
        return None
    if is_main_process():
        log.info("the teacher reads a %d-token prefix (its few-shot block) before each student prompt", len(prefix))
    return prefix
