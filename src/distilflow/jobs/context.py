"""What the runner hands every stage: the spec, the job's paths, the validated inputs, progress and the results
of earlier stages. Stages depend on this, never on the runner itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distilflow.jobs.progress import StageProgress
from distilflow.jobs.store import JobStore
from distilflow.prepare import PreparedInputs
from distilflow.jobspec import JobSpec
from distilflow.tasks import Example, Task
from distilflow.workspace import JobPaths, Workspace


@dataclass
class StageContext:
    spec: JobSpec
    workspace: Workspace
    paths: JobPaths
    store: JobStore | None  # None in the extra ranks of a distributed launch: they write no job state
    inputs: PreparedInputs
    fingerprints: dict[str, str] = field(default_factory=dict)  # stage -> fingerprint of its inputs
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Trainer callbacks an orchestrator adds to the train stage (distilflow tune: score each epoch, prune, budget).
    callbacks: list[Any] = field(default_factory=list)

    @property
    def task(self) -> Task:
        return self.inputs.task

    @property
    def name(self) -> str:
        assert self.spec.name
        return self.spec.name

    def examples(self, split: str) -> list[Example]:
        return self.inputs.examples.get(split, [])

    def progress(self, stage: str, total: int | None, description: str) -> StageProgress:
        return StageProgress(self.store, self.name, stage, total, description)

    def stage_metrics(self, stage: str) -> dict[str, Any]:
        """Metrics a finished stage recorded (from this run or an earlier one)."""
        if stage in self.results:
            return self.results[stage]
        if self.store is None:
            return {}
        return self.store.get(self.name).stage(stage).metrics
