"""The jobs commands: jobs list, jobs show (status, stages with durations, progress, last error), jobs cancel."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from distilflow.cli.common import (
    ConfigOption,
    DebugOption,
    WorkspaceOption,
    age,
    client_for,
    guard,
    jobs_app,
)


@jobs_app.command("list")
def jobs_list(workspace: WorkspaceOption = None, debug: DebugOption = False, config: ConfigOption = None) -> None:
    """All jobs of the workspace with their status and current stage."""

    def action() -> None:
        from rich.console import Console
        from rich.table import Table

        records = client_for(workspace, config).jobs.list()
        if not records:
            typer.echo("no jobs in this workspace")
            return
        table = Table("name", "task", "status", "stage", "progress", "updated")
        for record in records:
            stage = record.current_stage
            progress = f"{stage.done}/{stage.total}" if stage and stage.total else "-"
            table.add_row(record.name, record.task_type, record.status, stage.stage if stage else "-", progress,
                          age(record.updated_at))
        Console().print(table)

    guard(debug, action)


@jobs_app.command("show")
def jobs_show(name: str, workspace: WorkspaceOption = None, as_json: Annotated[bool, typer.Option("--json")] = False,
              debug: DebugOption = False, config: ConfigOption = None) -> None:
    """Status, per-stage progress, registered models and the last error of one job."""

    def action() -> None:
        from dataclasses import asdict

        from distilflow.report.tables import fmt

        record = client_for(workspace, config).jobs.get(name)
        if as_json:
            typer.echo(json.dumps(asdict(record), indent=2, default=str))
            return
        stage = record.current_stage
        typer.echo(f"job:     {record.name} ({record.task_type})")
        typer.echo(f"status:  {record.status}")
        typer.echo(f"stage:   {stage.stage if stage else 'all done'}")
        typer.echo(f"updated: {age(record.updated_at)}")
        typer.echo("stages:")
        for s in record.stages:
            progress = f"{s.done}/{s.total}" if s.total else (str(s.done) if s.done else "")
            detail = f"  {s.message}" if s.message and s.status == "running" else ""
            # The last run's duration, or how long it runs so far (a killed job's stage stays "running": no clock)
            elapsed = s.elapsed() if s.seconds is None and record.status == "running" else s.seconds
            took = "" if elapsed is None else fmt(elapsed, "duration") + ("" if s.seconds is not None else " so far")
            typer.echo(f"  {s.stage:<9} {s.status:<10} {progress:>12} {took:>16}{detail}")
        for model in record.models:
            typer.echo(f"model:   {model.name} ({model.label}) {model.path}")
        error = record.error or next((s.error for s in record.stages if s.error), None)
        if record.status == "failed" and not error:
            error = "the job process stopped unexpectedly (killed?); run the same command again to resume"
        if error:
            typer.echo(f"last error: {error}")

    guard(debug, action)


@jobs_app.command("cancel")
def jobs_cancel(name: str, workspace: WorkspaceOption = None, debug: DebugOption = False,
                config: ConfigOption = None) -> None:
    """Stop a running job (run it again later to resume)."""

    def action() -> None:
        record = client_for(workspace, config).jobs.cancel(name)
        typer.echo(f"job {name}: {record.status}")

    guard(debug, action)
