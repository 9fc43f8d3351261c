"""The commands that run a job's stages: run, generate (with --dry-run), train, evaluate, report, tune."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from distilflow.cli.common import (
    ConfigOption,
    DebugOption,
    SpecArgument,
    WorkspaceOption,
    app,
    client_for,
    guard,
    load_spec_file,
)


def _run_stages(spec_path: Path, workspace: str | None, stages: list[str] | None, debug: bool,
                config: str | None = None) -> None:
    def action() -> None:
        from distilflow.catalog import find_workspace
        from distilflow.pipeline.runner import run_job
        from distilflow.workspace import Workspace

        spec = load_spec_file(spec_path, config)
        ws = Workspace(find_workspace(workspace, config))
        record = run_job(spec, ws, stages)
        if record is None:  # a non-main rank of a distributed launch
            return
        done = ", ".join(stages) if stages else "all stages"
        typer.echo(f"job {record.name}: {done} done; status {record.status}", err=True)
        paths = ws.job(record.name)
        if paths.report_md.exists() and (stages is None or "report" in stages):
            typer.echo(f"report: {paths.report_md}", err=True)

    guard(debug, action)


@app.command()
def run(spec: SpecArgument, workspace: WorkspaceOption = None, debug: DebugOption = False,
        config: ConfigOption = None) -> None:
    """Run every stage (prepare, generate, train, evaluate, report). Run again to resume."""
    _run_stages(spec, workspace, None, debug, config)


@app.command()
def generate(spec: SpecArgument, workspace: WorkspaceOption = None, debug: DebugOption = False,
             dry_run: Annotated[bool, typer.Option("--dry-run", help="Estimate requests, tokens and cost; send nothing.")]
             = False, config: ConfigOption = None) -> None:
    """Teacher stage: answer every training and validation input (resumes from the cache)."""
    if dry_run:
        def estimate() -> None:
            from distilflow.catalog import find_workspace
            from distilflow.evaluate.judge_estimate import judge_dry_run_text
            from distilflow.generate.estimate import dry_run_text
            from distilflow.workspace import Workspace

            job, where = load_spec_file(spec, config), Workspace(find_workspace(workspace, config))
            typer.echo(dry_run_text(job, where))
            judged = judge_dry_run_text(job, where)  # the judge's requests are paid for too
            if judged:
                typer.echo(judged)

        guard(debug, estimate)
        return
    _run_stages(spec, workspace, ["generate"], debug, config)


@app.command()
def train(spec: SpecArgument, workspace: WorkspaceOption = None, debug: DebugOption = False,
          config: ConfigOption = None) -> None:
    """Train the student on the synthetic data (resumes from the last checkpoint)."""
    _run_stages(spec, workspace, ["train"], debug, config)


@app.command()
def evaluate(spec: SpecArgument, workspace: WorkspaceOption = None, debug: DebugOption = False,
             config: ConfigOption = None) -> None:
    """Score teacher, baseline student and distilled student on the test data."""
    _run_stages(spec, workspace, ["evaluate"], debug, config)


@app.command()
def report(spec: SpecArgument, workspace: WorkspaceOption = None, debug: DebugOption = False,
           config: ConfigOption = None) -> None:
    """Write report.md and report.json from the evaluation results."""
    _run_stages(spec, workspace, ["report"], debug, config)


@app.command()
def tune(spec: SpecArgument,
         trials: Annotated[Optional[int], typer.Option("--trials", min=1, help="Trials in all, counting those of an "
                                                       "earlier run (default: tune.trials, else 20).")] = None,
         budget_minutes: Annotated[Optional[float], typer.Option("--budget-minutes", min=0.01, help="Stop the search "
                                                                 "after this many minutes.")] = None,
         workspace: WorkspaceOption = None, debug: DebugOption = False, config: ConfigOption = None) -> None:
    """Search the training settings (tune: in the spec) on the validation set; write best.yaml. Run again to resume."""

    def action() -> None:
        from distilflow.report.tuning import tuning_facts

        summary = client_for(workspace, config).jobs.tune(load_spec_file(spec, config), trials=trials,
                                                       budget_minutes=budget_minutes)
        for key, value in tuning_facts(summary):
            typer.echo(f"{key}: {value}")

    guard(debug, action)
