"""Stage 3, train: fine-tune the student on the synthetic data. One module per method."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext
    from distilflow.spec import JobSpec

# training.method -> "module:function"
METHODS: dict[str, str] = {
    "sft": "distilflow.train.sft:train_sft",
    "kd": "distilflow.train.kd:train_kd",
    "sparse_kd": "distilflow.train.sparse_kd:train_sparse_kd",
}


def run_train(ctx: "StageContext") -> dict[str, Any]:
    method = ctx.spec.training.method
    target = METHODS.get(method)
    if target is None:
        from distilflow.errors import SpecError

        raise SpecError(f"training.method {method!r} is not available yet (available: {', '.join(METHODS)})")
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)(ctx)


def preflight(spec: "JobSpec") -> None:
    """Checks that need no teacher answer: logit methods need one tokenizer for teacher and student."""
    from distilflow.train.compatibility import check_logit_distillation

    check_logit_distillation(spec)
