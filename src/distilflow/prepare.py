"""Stage 1, prepare: read and validate every data file before any work, and fingerprint each stage's inputs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilflow.data import read_examples
from distilflow.spec import JobSpec
from distilflow.tasks import Example, Task, get_task


@dataclass
class PreparedInputs:
    task: Task
    examples: dict[str, list[Example]]  # split -> examples
    data_hashes: dict[str, str]

    def summary(self) -> dict[str, Any]:
        counts = {split: len(rows) for split, rows in self.examples.items()}
        prompt_chars = {split: sum(len(m["content"]) for e in rows for m in e.messages)
                        for split, rows in self.examples.items()}
        with_reference = {split: sum(e.reference is not None for e in rows) for split, rows in self.examples.items()}
        return {"rows": counts, "prompt_chars": prompt_chars, "rows_with_reference": with_reference}


def _file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def prepare_inputs(spec: JobSpec) -> PreparedInputs:
    """Load every data file of the spec; the first bad row raises DataError (file, line, what is wrong)."""
    task = get_task(spec.task_type)
    limit = spec.generation.max_examples
    examples = {split: read_examples(path, task, split, limit=limit if split != "test" else
                                     spec.evaluation.max_examples)
                for split, path in spec.data_files().items()}
    hashes = {split: _file_hash(path) for split, path in spec.data_files().items()}
    if spec.training.method != "sft":  # logit KD needs one tokenizer for teacher and student: refuse before any work
        from distilflow.train.preflight import check_logit_distillation

        check_logit_distillation(spec)
    return PreparedInputs(task=task, examples=examples, data_hashes=hashes)


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_fingerprints(spec: JobSpec, data_hashes: dict[str, str]) -> dict[str, str]:
    """What each stage's output depends on; a change re-runs that stage and every later one.

    The teacher stage is cheap to re-run on a change of later settings: its answers are cached per request.
    """
    d = spec.public_dict()
    generate = _hash(d["task_type"], d["teacher"], d["generation"], spec.teacher_temperature,
                     data_hashes.get("train"), data_hashes.get("validation"))
    train = _hash(generate, d["student"], d["hyperparameters"], d["training"])
    evaluate = _hash(train, d["evaluation"], data_hashes.get("test"))
    # prepare runs on every command (it is the input check), so it never invalidates later stages.
    return {"prepare": "always", "generate": generate, "train": train, "evaluate": evaluate, "report": evaluate}
