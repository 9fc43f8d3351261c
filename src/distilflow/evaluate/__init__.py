"""Stage 4, evaluate: teacher, baseline and distilled student answer the same test inputs, each measured in a
worker process of its own (fair memory figures), then each student's agreement with the teacher.

stage.py runs the stage; config.py is what a worker is told (WorkerConfig); worker.py runs one; measure.py is the
one measure loop over an adapter: local.py (a local model) or api.py (a model behind an endpoint); recorded.py
scores a recorded teacher; save.py scores predictions and writes the files results.py describes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext


def run_evaluate(ctx: "StageContext") -> dict[str, Any]:
    from distilflow.evaluate.stage import evaluate_stage

    return evaluate_stage(ctx)
