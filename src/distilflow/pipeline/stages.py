"""The stages in order, where each one lives, what each needs first, and what each one's output depends on.

Each stage package exposes `run_<stage>(ctx) -> metrics` and may expose `preflight(spec)`: the checks that need no
teacher answer, run before anything is written or paid for. A command preflights only the stages it runs and the
ones that come after them, so `distilflow report` on a finished job needs neither the teacher's key nor its
tokenizer.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from distilflow.fingerprint import digest, file_digest
from distilflow.jobs.context import StageContext
from distilflow.jobs.store import STAGES
from distilflow.jobspec import JobSpec
from distilflow.prepare import PREPARED_KEY, PreparedInputs, prepare_inputs

# stage -> its package (imported lazily: `import distilflow` stays fast, optional engines load only when used)
STAGE_PACKAGES: dict[str, str] = {
    "generate": "distilflow.generate",
    "train": "distilflow.train",
    "evaluate": "distilflow.evaluate",
    "report": "distilflow.report",
}
PREREQUISITES: dict[str, str] = {"train": "generate", "evaluate": "train", "report": "evaluate"}


def stage_function(stage: str) -> Callable[[StageContext], dict[str, Any]]:
    return getattr(importlib.import_module(STAGE_PACKAGES[stage]), f"run_{stage}")


def stages_from(first: str) -> list[str]:
    """`first` and every stage after it (what a re-run of `first` makes stale)."""
    return list(STAGES[STAGES.index(first):])


def preflight(spec: JobSpec, stages: list[str] | None = None) -> PreparedInputs:
    """Stage 1: read and validate the data, then the own checks of `stages` and of every stage after the first of
    them (None: all); raises before anything is written."""
    inputs = prepare_inputs(spec)
    checked = list(STAGE_PACKAGES) if not stages else stages_from(min(stages, key=STAGES.index))
    for stage in checked:
        check = getattr(importlib.import_module(STAGE_PACKAGES[stage]), "preflight", None)
        if check is not None:
            check(spec)
    return inputs


def stage_fingerprints(spec: JobSpec, data_hashes: dict[str, str]) -> dict[str, str]:
    """What each stage's output depends on; a change re-runs that stage and every later one.

    The teacher stage is cheap to re-run on a change of later settings: its answers are cached per request.
    """
    d: dict[str, Any] = spec.fingerprint_dict()  # renamed keys hashed by their old names: old jobs keep theirs
    teachers = d["teachers"] if spec.teachers else d["teacher"]  # one teacher: the fingerprint it always had
    generate = digest([d["task_type"], teachers, d["generation"], spec.teacher_temperature,
                       data_hashes.get("train"), data_hashes.get("validation"),
                       # an extraction schema decides which teacher answers are kept (absent: the fingerprint it had)
                       *([d["schema"]] if "schema" in d else []),
                       # rows prepare dropped or cut (absent when the data passed every check: the fingerprint it had)
                       *([data_hashes[PREPARED_KEY]] if PREPARED_KEY in data_hashes else []),
                       # written inputs: the section, its seed rows, and the test rows they are kept away from
                       *([d["inputs"], spec.inputs and spec.inputs.seeds and file_digest(spec.inputs.seeds),
                          data_hashes.get("test"), spec.data.near_duplicate_threshold] if "inputs" in d else [])])
    student = {k: v for k, v in d["student"].items() if k != "name"}  # a name only names the outputs
    train = digest([generate, student, d["hyperparameters"], d["training"]])
    evaluate = digest([train, d["evaluation"], data_hashes.get("test")])
    # prepare runs on every command (it is the input check), so it never invalidates later stages.
    return {"prepare": "always", "generate": generate, "train": train, "evaluate": evaluate, "report": evaluate}
