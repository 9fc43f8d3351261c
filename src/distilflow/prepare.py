"""Stage 1, prepare: read and validate every data file before any work, and fingerprint each stage's inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distilflow.errors import DataError
from distilflow.fingerprint import file_digest
from distilflow.jobspec import JobSpec
from distilflow.tasks import ClassificationTask, Example, get_task, read_examples


@dataclass
class PreparedInputs:
    """Every data file of a job, read and validated (stage 1), and the hash of each file."""

    task: Task
    examples: dict[str, list[Example]]  # split -> examples
    data_hashes: dict[str, str]

    def summary(self) -> dict[str, Any]:
        counts = {split: len(rows) for split, rows in self.examples.items()}
        prompt_chars = {split: sum(len(m["content"]) for e in rows for m in e.messages)
                        for split, rows in self.examples.items()}
        with_reference = {split: sum(e.reference is not None for e in rows) for split, rows in self.examples.items()}
        return {"rows": counts, "prompt_chars": prompt_chars, "rows_with_reference": with_reference}


def prepare_inputs(spec: JobSpec) -> PreparedInputs:
    """Load every data file of the spec; the first bad row raises DataError (file, line, what is wrong)."""
    task = get_task(spec.task_type, spec.labels)
    limits = {"test": spec.evaluation.max_examples}
    examples = {split: read_examples(path, task, split, limit=limits.get(split, spec.generation.max_examples))
                for split, path in spec.data_files().items()}
    if isinstance(task, ClassificationTask) and not spec.labels:
        _labels_from_training_data(task, examples)
    hashes = {split: file_digest(path) for split, path in spec.data_files().items()}
    return PreparedInputs(task=task, examples=examples, data_hashes=hashes)


def _labels_from_training_data(task: ClassificationTask, examples: dict[str, list[Example]]) -> None:
    """Without `labels:` in the spec, the label set is the training data's; other splits must stay inside it."""
    labels = sorted({e.reference for e in examples["train"] if e.reference is not None})
    if len(labels) < 2:
        raise DataError(f"{examples['train'][0].source_file}: a classification job needs its label set: give "
                        f"`labels:` in the job spec, or label at least two kinds of training rows")
    task.set_labels(labels)
    for rows in examples.values():
        for example in rows:
            if example.reference is not None and example.reference not in labels:
                raise DataError(f"{example.source_file}, line {example.source_line}: label {example.reference!r} "
                                f"is not among the training data's labels ({', '.join(labels)})")
