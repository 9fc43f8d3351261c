"""Stage 1, prepare: read and validate every data file before any work (the rows, their lengths, training rows
that repeat held-out ones: overlap.py, lengths.py), describe the data for the report (profile.py), and hash what
each later stage's inputs depend on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distilflow.fingerprint import digest, file_digest
from distilflow.jobspec import JobSpec
from distilflow.prepare.lengths import check_lengths
from distilflow.prepare.overlap import OverlapFound, apply_overlap, find_overlap
from distilflow.prepare.profile import data_profile
from distilflow.tasks import Example, Task, read_examples, task_for_spec

# data_hashes key of what prepare changed in the rows it read (dropped or cut rows); absent when it changed nothing,
# so that a job whose data passes every check keeps the fingerprints it always had.
PREPARED_KEY = "prepared"


@dataclass
class PreparedInputs:
    """Every data file of a job, read and validated (stage 1), and the hash of each file."""

    task: Task
    examples: dict[str, list[Example]]  # split -> examples (training rows that overlap held-out ones left out)
    data_hashes: dict[str, str]
    given: dict[str, int] = field(default_factory=dict)  # split -> rows read from its file
    checks: dict[str, Any] = field(default_factory=dict)  # what the data checks found (overlap, cut inputs)

    def summary(self) -> dict[str, Any]:
        counts = {split: len(rows) for split, rows in self.examples.items()}
        prompt_chars = {split: sum(len(m["content"]) for e in rows for m in e.messages)
                        for split, rows in self.examples.items()}
        with_reference = {split: sum(e.reference is not None for e in rows) for split, rows in self.examples.items()}
        return {"rows": counts, "prompt_chars": prompt_chars, "rows_with_reference": with_reference,
                "data": {"given": self.given or counts, **self.checks,
                         "splits": data_profile(self.task, self.examples)}}


def prepare_inputs(spec: JobSpec) -> PreparedInputs:
    """Load every data file of the spec; the first bad row raises DataError (file, line, what is wrong). The job's
    task is the spec's, completed by what the data settles (e.g. a label set taken from the training rows).
    Training rows that near-duplicate validation or test rows are then handled as `data.overlap` says."""
    reader = task_for_spec(spec)
    limits = {"test": spec.evaluation.max_examples}
    examples = {split: read_examples(path, reader, split, limit=limits.get(split, spec.generation.max_examples))
                for split, path in spec.data_files().items()}
    task = reader.for_job(examples)
    hashes = {split: file_digest(path) for split, path in spec.data_files().items()}
    given = {split: len(rows) for split, rows in examples.items()}
    overlap = find_overlap(task, examples, spec.data)
    apply_overlap(task, examples, overlap)
    cut = check_lengths(spec, examples)  # raises, unless data.truncate: true
    checks: dict[str, Any] = {"overlap": overlap.summary(task)}
    if cut:
        checks["truncated"] = {k: v for k, v in cut.items() if k != "ids"}
    changed = _changes(overlap, cut)
    if changed:
        hashes[PREPARED_KEY] = digest(changed)
    return PreparedInputs(task=task, examples=examples, data_hashes=hashes, given=given, checks=checks)


def _changes(overlap: OverlapFound, cut: dict[str, Any]) -> dict[str, Any]:
    """What prepare changed in the rows (the part of later stages' inputs no file hash shows)."""
    changed: dict[str, Any] = {}
    if overlap.action == "drop" and overlap.pairs:
        changed["dropped"] = sorted(overlap.training_ids)
    if cut:
        changed["truncated"] = {"ids": cut["ids"], "limit": cut["limit"]}
    return changed
