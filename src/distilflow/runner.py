"""The stage runner: prepare -> generate -> train -> evaluate -> report, with status, resume and cancel.

Resume is by construction: a completed stage is skipped unless its inputs changed, the teacher stage
skips every request already in its cache, and training restarts from its last checkpoint.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from distilflow.data import write_text_atomic
from distilflow.errors import DistilflowError, JobCanceled
from distilflow.jobs import STAGES, JobRecord, JobStore
from distilflow.prepare import PreparedInputs, prepare_inputs, stage_fingerprints
from distilflow.progress import StageProgress
from distilflow.spec import JobSpec, dump_spec
from distilflow.tasks import Example, Task
from distilflow.workspace import JobPaths, Workspace

log = logging.getLogger(__name__)

# stage -> "module:function"; each takes a StageContext and returns the stage's metrics.
STAGE_FUNCTIONS: dict[str, str] = {
    "generate": "distilflow.generate:run_generate",
    "train": "distilflow.train:run_train",
    "evaluate": "distilflow.evaluate.runner:run_evaluate",
    "report": "distilflow.evaluate.report:run_report",
}
PREREQUISITES: dict[str, str] = {"train": "generate", "evaluate": "train", "report": "evaluate"}


def is_main_process() -> bool:
    """False in the extra ranks of a multi-process (accelerate/torchrun) launch: they never write job state."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class StageContext:
    spec: JobSpec
    workspace: Workspace
    paths: JobPaths
    store: JobStore | None
    inputs: PreparedInputs
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

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


def _stage_function(stage: str) -> Callable[[StageContext], dict[str, Any]]:
    module, function = STAGE_FUNCTIONS[stage].split(":")
    return getattr(importlib.import_module(module), function)


def register_job(spec: JobSpec, workspace: Workspace) -> tuple[JobStore, PreparedInputs]:
    """Validate the inputs, then record the job and its resolved spec. Nothing is written if inputs are bad."""
    inputs = prepare_inputs(spec)
    store = JobStore(workspace.db_path)
    paths = workspace.job(spec.name or "")
    reset = store.upsert_job(spec.name or "", spec.task_type, spec.public_dict(),
                             stage_fingerprints(spec, inputs.data_hashes))
    if reset:
        log.info("inputs changed; re-running from stage %s", reset[0])
    paths.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(paths.spec, dump_spec(spec))
    return store, inputs


def run_job(spec: JobSpec, workspace: Workspace, stages: list[str] | None = None) -> JobRecord | None:
    """Run the job's stages. `stages=None` runs every unfinished stage; naming stages re-runs them."""
    assert spec.name
    explicit = stages is not None
    wanted = list(STAGES[1:]) if stages is None else stages
    if not is_main_process():
        # Extra ranks of a distributed launch only take part in training.
        inputs = prepare_inputs(spec)
        context = StageContext(spec, workspace, workspace.job(spec.name), None, inputs)
        for stage in wanted:
            if stage == "train":
                _stage_function(stage)(context)
        return None

    store, inputs = register_job(spec, workspace)
    context = StageContext(spec, workspace, workspace.job(spec.name), store, inputs)
    store.claim(spec.name, os.getpid())
    previous_handler = signal.signal(signal.SIGTERM, _raise_canceled)
    current = "prepare"
    try:
        store.start_stage(spec.name, "prepare")
        store.finish_stage(spec.name, "prepare", "completed", metrics=inputs.summary())
        for stage in wanted:
            record = store.get(spec.name)
            if record.stage(stage).status == "completed" and not explicit:
                continue
            needed = PREREQUISITES.get(stage)
            if needed and record.stage(needed).status != "completed" and needed not in wanted:
                raise DistilflowError(
                    f"stage {stage!r} needs stage {needed!r} first; run `distilflow {needed} ...` or `distilflow run ...`")
            current = stage
            store.start_stage(spec.name, stage)
            log.info("stage %s: started", stage)
            metrics = _stage_function(stage)(context)
            context.results[stage] = metrics
            store.finish_stage(spec.name, stage, "completed", metrics=metrics)
            if explicit:  # a re-run stage makes the outputs of later stages stale
                store.reset_stages(spec.name, list(STAGES[STAGES.index(stage) + 1:]))
        done = all(s.status == "completed" for s in store.get(spec.name).stages)
        store.set_job_status(spec.name, "completed" if done else "queued")
    except (JobCanceled, KeyboardInterrupt):
        store.finish_stage(spec.name, current, "canceled")
        store.set_job_status(spec.name, "canceled", error="canceled by the user")
        raise JobCanceled(f"job {spec.name!r} was canceled during stage {current}") from None
    except DistilflowError as error:
        store.finish_stage(spec.name, current, "failed", error=str(error))
        store.set_job_status(spec.name, "failed", error=str(error))
        raise
    except Exception as error:
        message = f"internal error in stage {current}: {error.__class__.__name__}: {error}"
        store.finish_stage(spec.name, current, "failed", error=message)
        store.set_job_status(spec.name, "failed", error=message)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    return store.get(spec.name)


def _raise_canceled(signum: int, frame: Any) -> None:
    raise JobCanceled("canceled")
