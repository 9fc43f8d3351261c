"""Stage 2, generate: the teacher answers every training and validation input (run.py); the answers are checked
and become the synthetic data set (synthetic.py); `--dry-run` estimates requests, tokens and cost (estimate.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext


def run_generate(ctx: "StageContext") -> dict[str, Any]:
    from distilflow.generate.run import generate_stage

    return generate_stage(ctx)
