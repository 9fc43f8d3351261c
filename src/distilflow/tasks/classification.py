"""Classification: a text -> one label of a fixed set (customer-support intents, topics, sentiment, ...).

Rows are {"text": ..., "label": ...}; the label is optional (unlabelled rows are what a user has most of).
The label set is the spec's `labels:`, or else the labels seen in the training data. A model's answer counts only
when it is exactly one label, ignoring case, spaces, underscores and punctuation; anything else is `not_a_label`.
Scores: accuracy and macro-F1 (mean over labels of per-label F1), both with bootstrap intervals.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from distilflow.errors import DataError
from distilflow.metrics.text import MetricStats, mean_stats
from distilflow.tasks.base import Example, Message, RowError, Task, require_text, user_prompt

# The student's zero-shot prompt; the answer follows as the label itself.
PROMPT = "Message: {text}\nLabel:"
TEXT_FIELDS = ("text", "message", "sentence", "utterance")
LABEL_FIELDS = ("label", "category", "intent")  # Banking77 calls it category
_SEPARATORS = re.compile(r"[\W_]+", re.UNICODE)
# The label-bias check fires when the total variation distance between the teacher's label shares and the labelled
# rows' is above this. Measured (bench/README.md, "Teacher labels"): teachers that spread their answers like the
# data measured 0.10-0.28 (sampling noise alone is ~0.08 for ten labels at 250 answers); the biased ones (one label
# for up to 69% of the answers, accuracy 0.46 and below) 0.34 and above.
MAX_LABEL_DISTANCE = 0.3
MIN_BALANCE_ANSWERS = 20  # fewer answers are too noisy to judge
_PROMPT_PARTS = re.compile(r"Message: (.*)\nLabel:", re.DOTALL)  # PROMPT's two parts around the text


def label_key(text: str) -> str:
    """Case, spacing, underscores and punctuation removed: "Activate my card." and "activate_my_card" agree."""
    return _SEPARATORS.sub(" ", text.lower()).strip()


class ClassificationTask(Task):
    name = "classification"
    input_fields = TEXT_FIELDS
    primary_metric = "accuracy"
    metric_names = ("accuracy", "macro_f1")
    answer_modes = ("generate", "rank")

    def __init__(self, labels: Sequence[str] = ()) -> None:
        keys = [label_key(label) for label in labels]
        if len(set(keys)) != len(keys):
            raise RowError("labels must differ in more than case, spacing and punctuation")
        self.labels = tuple(labels)
        self._by_key = dict(zip(keys, self.labels))

    def with_labels(self, labels: Sequence[str]) -> "ClassificationTask":
        return type(self)(labels)

    def labels_from(self, references: Iterable[Any]) -> "ClassificationTask":
        """This task, or (without a label set) a new one whose labels are those the references use."""
        return self if self.labels else self.with_labels(sorted({r for r in references if r is not None}))

    def for_job(self, examples: Mapping[str, Sequence[Example]]) -> "ClassificationTask":
        """Without `labels:` in the spec, the label set is the training data's; other splits must stay inside it.
        (With `labels:`, every row was checked against them as it was read.)"""
        if self.labels:
            return self
        task = self.labels_from(e.reference for e in examples["train"])
        if len(task.labels) < 2:
            raise DataError(f"{examples['train'][0].source_file}: a classification job needs its label set: give "
                            f"`labels:` in the job spec, or label at least two kinds of training rows")
        for rows in examples.values():
            for example in rows:
                if example.reference is not None and example.reference not in task.labels:
                    spelling = task._by_key.get(label_key(example.reference))
                    known = (f"is spelled {spelling!r} in the training data; labels are matched exactly"
                             if spelling else f"is not among the training data's labels ({', '.join(task.labels)})")
                    raise DataError(f"{example.source_file}, line {example.source_line}: label "
                                    f"{example.reference!r} {known}")
        return task

    def for_test_file(self, examples: Sequence[Example]) -> "ClassificationTask":
        return self.labels_from(e.reference for e in examples)

    def label_balance(self, answers: Sequence[str | None], labelled: Sequence[Any]) -> dict[str, Any] | None:
        """The teacher's label shares against the labelled rows': their total variation distance (half the summed
        absolute differences: the share of answers that would have to change label to match), the largest answer
        label with its share and its labelled share, and `biased` where the distance exceeds MAX_LABEL_DISTANCE."""
        counts = Counter(a for a in answers if a in self._by_key.values())
        wanted = Counter(r for r in labelled if r in self._by_key.values())
        n, m = sum(counts.values()), sum(wanted.values())
        if not n or not m:
            return None
        shares = {label: counts[label] / n for label in self.labels}
        expected = {label: wanted[label] / m for label in self.labels}
        distance = sum(abs(shares[label] - expected[label]) for label in self.labels) / 2
        top = max(self.labels, key=lambda label: shares[label])
        return {"answers": n, "labelled": m, "distance": round(distance, 4), "threshold": MAX_LABEL_DISTANCE,
                "top_label": top, "top_share": round(shares[top], 4), "top_labelled_share": round(expected[top], 4),
                "biased": n >= MIN_BALANCE_ANSWERS and distance > MAX_LABEL_DISTANCE,
                "shares": {label: round(share, 4) for label, share in shares.items()}}

    def report_sections(self, predictions: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
        """The confusion matrix of each model that answered (report.html draws it)."""
        return {"confusion": {label: confusion_counts(self, rows) for label, rows in predictions.items() if rows}}

    # ----- written inputs ---------------------------------------------------------------------------------
    def write_targets(self) -> tuple[str, ...]:
        return self.labels

    def input_text(self, example: Example) -> str:
        given = next((example.fields[k] for k in TEXT_FIELDS if isinstance(example.fields.get(k), str)), None)
        if given is not None:
            return given.strip()
        prompt = super().input_text(example)  # a chat-form row: its prompt, less the task's own wrapping
        match = _PROMPT_PARTS.fullmatch(prompt.strip())
        return match.group(1) if match else prompt

    def row_for_input(self, text: str) -> dict[str, Any]:
        return {"text": text}

    # ----- rows -------------------------------------------------------------------------------------------
    def example_from_fields(self, row: dict[str, Any]) -> tuple[list[Message], Any]:
        text_key = next((k for k in TEXT_FIELDS if k in row), "text")
        text = require_text(row, text_key)
        label_field = next((k for k in LABEL_FIELDS if row.get(k) is not None), None)
        return user_prompt(PROMPT.format(text=text.strip())), (
            None if label_field is None else self._reference(row[label_field]))

    def prompt_for_input(self, text: str) -> str:
        return PROMPT.format(text=text.strip())

    def reference_from_text(self, text: str) -> Any:
        return self._reference(text)

    def _reference(self, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise RowError(f"the label must be a non-empty string, not {str(value)[:40]!r}")
        label = value.strip()
        if self.labels and label not in self.labels:
            spelling = self._by_key.get(label_key(label))
            if spelling is not None:  # a typo of case or punctuation would silently merge or split classes
                raise RowError(f"label {label[:40]!r} is spelled {spelling!r} in the job's labels; labels are "
                               f"matched exactly: write {spelling!r}")
            raise RowError(f"label {label[:40]!r} is not one of the job's labels ({', '.join(self.labels)})")
        return label

    def reference_answer(self, reference: Any) -> str:
        return str(reference)

    # ----- answers ----------------------------------------------------------------------------------------
    def extract_answer(self, text: str) -> str | None:
        """The label a model's answer names: its first line must be exactly one label (normalised)."""
        first_line = next((line for line in text.strip().splitlines() if line.strip()), "")
        return self._by_key.get(label_key(first_line))

    def check_teacher_answer(self, text: str, reference: Any, verify: bool) -> str | None:
        reason = super().check_teacher_answer(text, reference, verify)
        return "not_a_label" if reason == "unparseable" else reason

    def agrees(self, answer: str, reference: Any) -> bool:
        return answer == reference

    # ----- scoring ----------------------------------------------------------------------------------------
    def example_scores(self, predictions: list[str], references: list[Any]) -> list[float]:
        return [float(self.extract_answer(p) == r) for p, r in zip(predictions, references)]

    def metric_stats(self, predictions: list[str], references: list[Any]) -> dict[str, MetricStats]:
        answers = [self.extract_answer(p) for p in predictions]
        return {"accuracy": mean_stats(self.example_scores(predictions, references)),
                "macro_f1": macro_f1_stats(answers, references, list(self.labels) or sorted(set(references)))}


def macro_f1_stats(answers: list[str | None], references: list[str], labels: list[str]) -> MetricStats:
    """Macro-F1 as per-example sufficient statistics: each example adds to one label's true positives, or to
    one label's false negatives and (when it named a label) another's false positives. The score of any
    resample is a function of the summed counts, so the bootstrap resamples it exactly."""
    index = {label: i for i, label in enumerate(labels)}
    rows = []
    for answer, reference in zip(answers, references):
        row = [0.0] * (3 * len(labels))  # per label: tp, fp, fn
        if answer == reference:
            row[3 * index[reference]] = 1.0
        else:
            if reference in index:
                row[3 * index[reference] + 2] = 1.0
            if answer in index:
                row[3 * index[answer] + 1] = 1.0
        rows.append(row)
    return MetricStats(rows, _macro_f1)


def _macro_f1(sums: Sequence[float]) -> float:
    """Mean per-label F1 over the labels that occur (as reference or answer) in this set of examples."""
    scores = []
    for i in range(0, len(sums), 3):
        tp, fp, fn = sums[i], sums[i + 1], sums[i + 2]
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else 0.0


def confusion_counts(task: ClassificationTask, rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """reference label -> answered label (or "not_a_label") -> count, over prediction rows with a reference."""
    matrix: dict[str, dict[str, int]] = {}
    for row in rows:
        if row.get("reference") is None:
            continue
        answer = task.extract_answer(row.get("prediction") or "") or "not_a_label"
        cell = matrix.setdefault(row["reference"], {})
        cell[answer] = cell.get(answer, 0) + 1
    return matrix
