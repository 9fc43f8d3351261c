"""Task types. Each task owns its row format, prompt, answer extraction, teacher-output checks and scoring."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from distilflow.errors import SpecError
from distilflow.jobspec import TASK_TYPES, JobSpec
from distilflow.tasks.base import Example, Message, RowError, Task
from distilflow.tasks.classification import ClassificationTask
from distilflow.tasks.conversation import ConversationTask
from distilflow.tasks.extraction import ExtractionTask
from distilflow.tasks.math import MathTask
from distilflow.tasks.nli import NliTask
from distilflow.tasks.qa import QaTask
from distilflow.tasks.rows import read_examples
from distilflow.tasks.summarization import SummarizationTask

TASKS: dict[str, type[Task]] = {
    task.name: task for task in (NliTask, ConversationTask, QaTask, MathTask, SummarizationTask, ClassificationTask,
                                 ExtractionTask)
}
assert set(TASKS) == set(TASK_TYPES), "spec.TASK_TYPES and the task classes must name the same tasks"


def get_task(name: str, labels: Sequence[str] | None = None, options: Mapping[str, Any] | None = None) -> Task:
    """A task of the named type; `labels`, when given, is its label set (a task of open answers refuses one);
    `options` are the task's own spec keys as `Task.spec_options` gives them (an extraction task's schema)."""
    if name not in TASKS:
        raise SpecError(f"unknown task type {name!r} (known: {', '.join(TASK_TYPES)})")
    task = TASKS[name].from_options(options or {})
    return task.with_labels(labels) if labels else task


def task_for_spec(spec: JobSpec) -> Task:
    """The task a job spec states, before its data settles the rest (Task.for_job)."""
    if spec.task_type not in TASKS:
        raise SpecError(f"unknown task type {spec.task_type!r} (known: {', '.join(TASK_TYPES)})")
    return TASKS[spec.task_type].from_spec(spec)


__all__ = ["ClassificationTask", "Example", "Message", "RowError", "Task", "TASKS", "get_task", "read_examples", "task_for_spec"]
