"""Stage 3, train: fine-tune the student on the synthetic data, with the method that `training.method` names.

Each method is one module, found through METHODS and imported only when used. A method module exposes
`preflight(spec)`, the checks that need no teacher answer (the runner calls it before any teacher request), and
`run(ctx) -> metrics`. What every method shares (rows, student, trainer arguments, callbacks, resume, fit, save)
is recipe.py (and teacher_prefix.py, the teacher's few-shot prefix for the methods whose
teacher scores the student's tokens); methods never import each other.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol, cast

from distilflow.errors import SpecError
from distilflow.jobspec import TRAINING_METHODS

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext
    from distilflow.jobspec import JobSpec

# training.method -> its module
METHODS: dict[str, str] = {
    "sft": "distilflow.train.sft",
    "kd": "distilflow.train.kd",
    "sparse_kd": "distilflow.train.sparse_kd",
    "on_policy": "distilflow.train.on_policy",
}
assert set(METHODS) == set(TRAINING_METHODS), "spec.TRAINING_METHODS and train.METHODS must name the same methods"


class TrainingMethod(Protocol):
    """What a method module provides."""

    def preflight(self, spec: "JobSpec") -> None: ...

    def run(self, ctx: "StageContext") -> dict[str, Any]: ...


def method_module(method: str) -> TrainingMethod:
    module = METHODS.get(method)
    if module is None:
        raise SpecError(f"training.method {method!r} is not available yet (available: {', '.join(METHODS)})")
    return cast(TrainingMethod, importlib.import_module(module))


def preflight(spec: "JobSpec") -> None:
    """Before any teacher request: the student loads (and its prune rule fits), then the method's own checks of
    settings, teacher and student (e.g. one tokenizer for logit methods)."""
    from distilflow.train.student import check_student_loads

    check_student_loads(spec)
    method_module(spec.training.method).preflight(spec)


def run_train(ctx: "StageContext") -> dict[str, Any]:
    return method_module(ctx.spec.training.method).run(ctx)
