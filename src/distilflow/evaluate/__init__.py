"""Stage 4, evaluate: teacher, baseline and distilled student answer the same test inputs, each measured in a
worker process of its own (fair memory figures), then each student's agreement with the teacher.

stage.py runs the stage; config.py is what a worker is told (WorkerConfig); worker.py runs one; measure.py is the
one measure loop over an adapter: local.py (a local model) or api.py (a model behind an endpoint); recorded.py
scores a recorded teacher; save.py scores predictions and writes the files results.py describes. judge.py asks the
judges of `evaluation.judge` (its requests: judge_plan.py; the wire contract: judge_wire.py; the controls:
controls.py; its figures: judge_score.py; the dry run: judge_estimate.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext
    from distilflow.jobspec import JobSpec


def preflight(spec: "JobSpec") -> None:
    """What the judges need that can be checked before anything runs: their key and header variables are set, a
    recorded judge's file exists (evaluation.judge)."""
    from distilflow.evaluate.judge import judge_section
    from distilflow.models.openai import OpenAIEndpoint
    from distilflow.teachers import load_teacher

    several = isinstance(spec.evaluation.judge, list)
    for index, judge in enumerate(spec.evaluation.judges()):
        section = judge_section(judge, index, several)
        if judge.backend == "openai":
            OpenAIEndpoint(judge, section).open_key()
            judge.resolved_headers()
        load_teacher(judge, section=section).close()


def run_evaluate(ctx: "StageContext") -> dict[str, Any]:
    from distilflow.evaluate.stage import evaluate_stage

    return evaluate_stage(ctx)
