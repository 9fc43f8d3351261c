"""`distilflow tune`: a search over a job's training settings (study.py), scored on validation data
(scorer.py), over the space of `tune:` (space.py), summarized for the report (report.py). Imported lazily."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distilflow.jobspec import JobSpec
    from distilflow.workspace import Workspace


def tune_job(spec: "JobSpec", workspace: "Workspace", trials: int | None = None,
             budget_minutes: float | None = None) -> dict[str, Any]:
    from distilflow.tune.study import tune_job as run

    return run(spec, workspace, trials, budget_minutes)
