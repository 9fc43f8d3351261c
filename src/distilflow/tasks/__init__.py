"""Task types. Each task owns its row format, prompt, answer extraction, teacher-output checks and scoring."""

from __future__ import annotations

from distilflow.errors import SpecError
from distilflow.jobspec import TASK_TYPES
from distilflow.tasks.base import Example, Message, RowError, Task
from distilflow.tasks.classification import ClassificationTask
from distilflow.tasks.conversation import ConversationTask
from distilflow.tasks.math import MathTask
from distilflow.tasks.nli import NliTask
from distilflow.tasks.qa import QaTask
from distilflow.tasks.rows import read_examples
from distilflow.tasks.summarization import SummarizationTask

TASKS: dict[str, type[Task]] = {
    task.name: task for task in (NliTask, ConversationTask, QaTask, MathTask, SummarizationTask, ClassificationTask)
}
assert set(TASKS) == set(TASK_TYPES), "spec.TASK_TYPES and the task classes must name the same tasks"


def get_task(name: str, labels: list[str] | None = None) -> Task:
    """A task instance; `labels` is the label set of a classification task (others have none)."""
    if name not in TASKS:
        raise SpecError(f"unknown task type {name!r} (known: {', '.join(TASK_TYPES)})")
    return ClassificationTask(labels) if name == "classification" else TASKS[name]()


__all__ = ["ClassificationTask", "Example", "Message", "RowError", "Task", "TASKS", "get_task", "read_examples"]
