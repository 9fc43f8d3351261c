"""What every task type owns: reading its rows, its prompt, answer extraction, teacher-output checks, scoring,
and everything else a stage would otherwise ask the task's type about (its label set, how a model may answer,
what the data decides, its own report sections). Stages ask the task; they never ask which task it is."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from distilflow.errors import SpecError

if TYPE_CHECKING:
    from distilflow.jobspec import JobSpec
    from distilflow.metrics.text import MetricStats

Message = dict[str, str]
ROLES = ("system", "user", "assistant")

# Phrases that mark a teacher refusing instead of answering; checked at the start of an answer.
_REFUSAL = re.compile(
    r"^\s*(i'?m sorry|i am sorry|sorry,|i apologi[sz]e|as an ai\b|i cannot\b|i can'?t (help|assist|answer|provide)"
    r"|i am (not able|unable)|i'?m (not able|unable)|i won'?t\b)",
    re.IGNORECASE,
)


class RowError(ValueError):
    """A data row does not fit the task; the message says what is wrong (file and line are added by the reader)."""


@dataclass
class Example:
    """One task input: the prompt the student sees, the optional reference, and where it came from."""

    id: str
    messages: list[Message]
    reference: Any = None
    source_file: str = ""
    source_line: int = 0
    # The row's scalar fields as given (e.g. a difficulty tag): what generation.combine route can pick a teacher by.
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def provenance(self) -> dict[str, Any]:
        return {"file": self.source_file, "line": self.source_line}


class Task:
    """Base class; one subclass per task type. Subclasses set `name`, `primary_metric` and the hooks below.

    A task is not changed once made: what the spec or the data settles later (a label set) gives a new task."""

    name: ClassVar[str]
    primary_metric: ClassVar[str]
    # Metrics where a higher value is better; used by reports for direction-aware comparisons.
    metric_names: ClassVar[tuple[str, ...]]
    # Refusal detection makes no sense for free chat (an assistant may legitimately decline).
    check_refusals: ClassVar[bool] = True
    # Free-text answers (no single checkable answer): agreement with the teacher is measured with BLEU.
    free_text: ClassVar[bool] = False
    # How a model may answer: "generate" (it writes its answer); tasks with a label set may also "rank" (the
    # model's likeliest label is its answer).
    answer_modes: ClassVar[tuple[str, ...]] = ("generate",)
    # The fixed set of answers (a classification task's labels); tasks of open answers have none.
    labels: tuple[str, ...] = ()
    # The row fields that hold the input in the user's own words (what `input_text` compares): the ones a CSV
    # header names too. Empty: the user turns of the prompt.
    input_fields: ClassVar[tuple[str, ...]] = ()
    # What a judge is told makes an answer good (evaluation.judge.rubric replaces it).
    judge_rubric: ClassVar[str] = ("The answer does what the task input asks: it is correct, complete, and clearly "
                                   "and concisely written.")

    # ----- what the spec and the data settle --------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: "JobSpec") -> "Task":
        """The task a job spec states: its type and the task's own keys (`labels:`). A task type with keys of
        its own reads them here, so that prepare never needs to know them."""
        task = cls()
        return task.with_labels(spec.labels) if spec.labels else task

    def spec_options(self) -> dict[str, Any]:
        """The task's own spec keys besides its labels (extraction: its schema), as JSON: what a worker process
        needs to build the same task again (`from_options`). None by default."""
        return {}

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "Task":
        """The task `spec_options` describes (its labels are given apart, with `with_labels`)."""
        if options:
            raise SpecError(f"task type {cls.name} takes no options (got {', '.join(sorted(options))})")
        return cls()

    def with_labels(self, labels: Sequence[str]) -> "Task":
        """A new task like this one with the given label set (this one is unchanged)."""
        raise SpecError(f"task type {self.name} has no label set: `labels:` is for tasks of fixed answers")

    def for_job(self, examples: Mapping[str, Sequence[Example]]) -> "Task":
        """The job's task once its data files are read (split -> examples): what the spec left to the data
        (a classification task's label set) is settled here and every split checked against it; raises
        DataError (file, line) when the data does not fit. A new task, or this one when nothing is left."""
        return self

    def for_test_file(self, examples: Sequence[Example]) -> "Task":
        """The task that scores one test file on its own (no job, no training data): what the file settles
        (the labels it uses). A new task, or this one when nothing is left."""
        return self

    def choices(self, answer_mode: str) -> tuple[str, ...]:
        """The answers a model picks from when it answers in `answer_mode` ("rank": the labels, where the
        task can rank); empty when it generates its answer."""
        return self.labels if answer_mode == "rank" and "rank" in self.answer_modes else ()

    def label_balance(self, answers: Sequence[str | None], labelled: Sequence[Any]) -> dict[str, Any] | None:
        """How far the teacher's answers (`answers`: each input's extracted answer) are spread differently from the
        labelled rows' references (`labelled`): the figures of the label-bias check, with `biased` where it fires.
        None for tasks without a label set (nothing to compare)."""
        return None

    def report_sections(self, predictions: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
        """The task's own parts of report.json, from each model's prediction rows (label -> rows); the report
        pages draw the ones they know (classification: "confusion"). None by default."""
        return {}

    # ----- inputs written by a teacher (`inputs:`) ------------------------------------------
    def write_targets(self) -> tuple[str, ...]:
        """The targets a written input is written for, spread evenly over them (a classification task's labels);
        none by default: every input is written for the task as a whole."""
        return ()

    def row_for_input(self, text: str) -> dict[str, Any]:
        """A data row holding one written input (read like any given row, with no reference)."""
        return {"messages": [{"role": "user", "content": text}]}

    # ----- reading rows ------------------------------------------------------------------
    def example_from_row(self, row: dict[str, Any]) -> tuple[list[Message], Any]:
        """Prompt messages and reference for one JSON row; raises RowError with what is wrong."""
        if "messages" in row:
            messages = validate_messages(row["messages"])
            reference_text = None
            if messages[-1]["role"] == "assistant":
                reference_text = messages[-1]["content"]
                messages = messages[:-1]
            if not messages or messages[-1]["role"] != "user":
                raise RowError("'messages' must end with a user turn (optionally followed by the reference assistant turn)")
            reference = None if reference_text is None else self.reference_from_text(reference_text)
            return messages, reference
        return self.example_from_fields(row)

    def example_from_fields(self, row: dict[str, Any]) -> tuple[list[Message], Any]:
        raise NotImplementedError

    def reference_from_text(self, text: str) -> Any:
        """The reference carried by an assistant turn in chat-form rows."""
        return text

    def reference_answer(self, reference: Any) -> str:
        """A reference written as a model's answer (the assistant turn of a few-shot example)."""
        return str(reference[0] if isinstance(reference, list) else reference)

    def input_text(self, example: Example) -> str:
        """The input in the user's own words, without the task's prompt template: what the near-duplicate and
        length checks of the data look at (two short messages in one template would otherwise look alike), and what
        a seed shows the inputs writer. The
        row's `input_fields` when it has them, else its user turns (chat-form rows)."""
        given = [str(example.fields[k]) for k in self.input_fields if isinstance(example.fields.get(k), str)]
        return "\n".join(given) if given else "\n".join(m["content"] for m in example.messages if m["role"] == "user")

    # ----- serving ----------------------------------------------------------------------
    def prompt_for_input(self, text: str) -> str:
        """The user turn the student was trained on, made from one input a person types (what a served student's
        template wraps around a message, e.g. Ollama's TEMPLATE). By default they type the whole prompt."""
        return text

    @property
    def serving_temperature(self) -> float | None:
        """The temperature a served student answers with: 0 (greedy, as it was evaluated) where an answer is right
        or wrong; None (the runtime's own default) for free text, where varied wording is welcome."""
        return None if self.free_text else 0.0

    # ----- answers -----------------------------------------------------------------------
    def extract_answer(self, text: str) -> str | None:
        """The task's answer inside a model response (None when it cannot be found)."""
        text = text.strip()
        return text or None

    def check_teacher_answer(self, text: str, reference: Any, verify: bool) -> str | None:
        """Why a teacher answer is unusable for training (None when it is fine)."""
        if not text.strip():
            return "empty"
        if self.check_refusals and _REFUSAL.match(text):
            return "refusal"
        answer = self.extract_answer(text)
        if answer is None:
            return "unparseable"
        if verify and reference is not None and not self.agrees(answer, reference):
            return "disagrees_with_reference"
        return None

    def rejection_detail(self, text: str, reason: str) -> str | None:
        """More about why a teacher answer was rejected (which part of the answer is wrong), for rejected.jsonl;
        None when the reason says it all."""
        return None

    def training_answer(self, text: str) -> str:
        """The accepted teacher answer as the student learns it (the text itself, unless the task has a canonical
        form of its answers)."""
        return text

    def agrees(self, answer: str, reference: Any) -> bool:
        """Whether an extracted answer matches the reference (tasks without a checkable answer say True)."""
        return True

    def answer_key(self, text: str) -> str | None:
        """What samples must share to count as agreeing under majority voting."""
        return self.extract_answer(text)

    # ----- scoring -----------------------------------------------------------------------
    def metric_stats(self, predictions: list[str], references: list[Any]) -> dict[str, "MetricStats"]:
        """Per-example statistics of every metric in `metric_names` (scores and bootstrap intervals come from them)."""
        raise NotImplementedError

    def example_scores(self, predictions: list[str], references: list[Any]) -> list[float]:
        """Per-example values of the primary metric (for confidence intervals)."""
        raise NotImplementedError


def validate_messages(value: Any) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise RowError("'messages' must be a non-empty list of {role, content} objects")
    messages: list[Message] = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise RowError(f"messages[{i}] must be an object with 'role' and 'content'")
        role, content = turn.get("role"), turn.get("content")
        if role not in ROLES:
            raise RowError(f"messages[{i}].role must be one of {', '.join(ROLES)} (got {role!r})")
        if not isinstance(content, str):
            raise RowError(f"messages[{i}].content must be a string")
        messages.append({"role": role, "content": content})
    if not any(m["role"] == "user" for m in messages):
        raise RowError("'messages' has no user turn")
    return messages


def require_text(row: dict[str, Any], key: str, *, allow_list: bool = False) -> str:
    """A required non-empty string field (a list of strings is joined when `allow_list`)."""
    if key not in row:
        present = ", ".join(sorted(row)) or "none"
        raise RowError(f"missing field '{key}' (fields present: {present})")
    value = row[key]
    if allow_list and isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = " ".join(v.strip() for v in value)
    if not isinstance(value, str):
        raise RowError(f"field '{key}' must be a string, not {type(value).__name__}")
    if not value.strip():
        raise RowError(f"field '{key}' is empty")
    return value


def user_prompt(text: str) -> list[Message]:
    return [{"role": "user", "content": text}]
