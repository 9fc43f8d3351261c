"""Stage 4, evaluate: teacher, baseline and distilled student answer the same test inputs, each measured in a
worker process of its own (fair memory figures), then each student's agreement with the teacher."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext


def run_evaluate(ctx: "StageContext") -> dict[str, Any]:
    from distilflow.evaluate.stage import evaluate_stage

    return evaluate_stage(ctx)
