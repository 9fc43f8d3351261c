"""Stage 1, prepare: read and validate every data file before any work, and fingerprint each stage's inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distilflow.fingerprint import file_digest
from distilflow.jobspec import JobSpec
from distilflow.tasks import Example, Task, read_examples, task_for_spec


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
    """Load every data file of the spec; the first bad row raises DataError (file, line, what is wrong). The job's
    task is the spec's, completed by what the data settles (e.g. a label set taken from the training rows)."""
    reader = task_for_spec(spec)
    limits = {"test": spec.evaluation.max_examples}
    examples = {split: read_examples(path, reader, split, limit=limits.get(split, spec.generation.max_examples))
                for split, path in spec.data_files().items()}
    task = reader.for_job(examples)
    hashes = {split: file_digest(path) for split, path in spec.data_files().items()}
    return PreparedInputs(task=task, examples=examples, data_hashes=hashes)
