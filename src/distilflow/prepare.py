"""Stage 1, prepare: read and validate every data file before any work, and fingerprint each stage's inputs."""

from __future__ import annotations

from typing import Any

from distilflow.errors import DataError
from distilflow.fingerprint import digest, file_digest
from distilflow.jobs.context import PreparedInputs
from distilflow.spec import JobSpec
from distilflow.tasks import ClassificationTask, Example, get_task, read_examples


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


def stage_fingerprints(spec: JobSpec, data_hashes: dict[str, str]) -> dict[str, str]:
    """What each stage's output depends on; a change re-runs that stage and every later one.

    The teacher stage is cheap to re-run on a change of later settings: its answers are cached per request.
    """
    d: dict[str, Any] = spec.public_dict()
    teachers = d["teachers"] if spec.teachers else d["teacher"]  # one teacher: the fingerprint it always had
    generate = digest([d["task_type"], teachers, d["generation"], spec.teacher_temperature,
                       data_hashes.get("train"), data_hashes.get("validation")])
    student = {k: v for k, v in d["student"].items() if k != "name"}  # a name only names the outputs
    train = digest([generate, student, d["hyperparameters"], d["training"]])
    evaluate = digest([train, d["evaluation"], data_hashes.get("test")])
    # prepare runs on every command (it is the input check), so it never invalidates later stages.
    return {"prepare": "always", "generate": generate, "train": train, "evaluate": evaluate, "report": evaluate}
