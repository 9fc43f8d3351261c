"""Task types. Each task owns its row format, prompt, answer extraction, teacher-output checks and scoring."""

from __future__ import annotations

from distilflow.tasks.base import Example, Message, RowError, Task
from distilflow.tasks.conversation import ConversationTask
from distilflow.tasks.math import MathTask
from distilflow.tasks.nli import NliTask
from distilflow.tasks.qa import QaTask
from distilflow.tasks.summarization import SummarizationTask

TASKS: dict[str, type[Task]] = {
    task.name: task for task in (NliTask, ConversationTask, QaTask, MathTask, SummarizationTask)
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]()
    except KeyError:
        raise ValueError(f"unknown task type {name!r} (known: {', '.join(TASKS)})") from None


__all__ = ["Example", "Message", "RowError", "Task", "TASKS", "get_task"]
