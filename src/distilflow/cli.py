"""The command line. Thin: it parses arguments and calls the same functions as the Python API.

Errors are one sentence on stderr and exit status 1 (no traceback unless --debug).
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from distilflow.errors import DistilflowError, JobCanceled

if TYPE_CHECKING:
    from distilflow.client import Client
    from distilflow.jobspec import JobSpec

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Distil a large teacher LLM into a small, fast student for one task.",
)
jobs_app = typer.Typer(no_args_is_help=True, help="List, inspect and cancel jobs.", pretty_exceptions_enable=False)
app.add_typer(jobs_app, name="jobs")

WorkspaceOption = Annotated[Optional[str], typer.Option(
    "--workspace", "-w", help="Folder holding jobs (default: $DISTILFLOW_HOME or ./distilflow-runs).")]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show full tracebacks and debug logs.")]
SpecArgument = Annotated[Path, typer.Argument(help="Job spec (YAML).", show_default=False)]
ConfigOption = Annotated[Optional[str], typer.Option(
    "--config", help="distilflow.yaml: workspace and model catalog (default: $DISTILFLOW_CONFIG, else distilflow.yaml "
                     "in this folder or a parent).")]
models_app = typer.Typer(no_args_is_help=True, help="Models registered by completed jobs.",
                         pretty_exceptions_enable=False)
app.add_typer(models_app, name="models")


def _setup_logging(debug: bool) -> None:
    from rich.logging import RichHandler

    from distilflow.jobs.progress import stderr_console

    handler = RichHandler(console=stderr_console(), show_path=debug, show_time=False)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s", force=True)
    logging.getLogger("distilflow").setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        quiet_libraries()


def quiet_libraries() -> None:
    """Our own progress bars say what is happening; silence the libraries' bars and chatter."""
    import os
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _guard(debug: bool, action: Callable[[], Any]) -> Any:
    """Run a command; user errors become one sentence and exit status 1. Every message and traceback is scrubbed
    of the secrets this process has read (API keys, header values)."""
    from distilflow.secrets import scrub

    _setup_logging(debug)
    try:
        return action()
    except JobCanceled as error:
        typer.echo(scrub(f"canceled: {error}"), err=True)
        raise typer.Exit(130) from None
    except KeyboardInterrupt:
        typer.echo("interrupted; run the same command again to resume", err=True)
        raise typer.Exit(130) from None
    except Exception as error:  # noqa: BLE001 - a user error is one sentence; a bug is one line unless --debug
        if debug:
            typer.echo(scrub(traceback.format_exc()), err=True)
        elif isinstance(error, DistilflowError):
            typer.echo(scrub(f"error: {error}"), err=True)
        else:
            first_line = (str(error).strip().splitlines() or [""])[0]
            typer.echo(scrub(f"error: internal error: {error.__class__.__name__}: {first_line} "
                             "(run with --debug for details)"), err=True)
        raise typer.Exit(1) from None


def _client(workspace: str | None, config: str | None, *, catalog: bool = False) -> "Client":
    """The Client a command works through; the config file is read for its catalog only when `catalog`."""
    from distilflow.catalog import WorkspaceConfig, find_workspace
    from distilflow.client import Client

    if catalog:
        return Client(workspace, config=WorkspaceConfig.find(config))
    return Client(find_workspace(workspace, config))


def _load_spec(spec_path: Path, config: str | None) -> "JobSpec":
    from distilflow.catalog import spec_resolver
    from distilflow.jobspec import load_spec

    return load_spec(spec_path, resolve=spec_resolver(config))


def _run_stages(spec_path: Path, workspace: str | None, stages: list[str] | None, debug: bool,
                config: str | None = None) -> None:
    def action() -> None:
        from distilflow.catalog import find_workspace
        from distilflow.pipeline.runner import run_job
        from distilflow.workspace import Workspace

        spec = _load_spec(spec_path, config)
        ws = Workspace(find_workspace(workspace, config))
        record = run_job(spec, ws, stages)
        if record is None:  # a non-main rank of a distributed launch
            return
        done = ", ".join(stages) if stages else "all stages"
        typer.echo(f"job {record.name}: {done} done; status {record.status}", err=True)
        paths = ws.job(record.name)
        if paths.report_md.exists() and (stages is None or "report" in stages):
            typer.echo(f"report: {paths.report_md}", err=True)

    _guard(debug, action)


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
            from distilflow.generate.estimate import dry_run_text
            from distilflow.workspace import Workspace

            from distilflow.evaluate.judge_estimate import judge_dry_run_text

            job, where = _load_spec(spec, config), Workspace(find_workspace(workspace, config))
            typer.echo(dry_run_text(job, where))
            judged = judge_dry_run_text(job, where)  # the judge's requests are paid for too
            if judged:
                typer.echo(judged)

        _guard(debug, estimate)
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

        summary = _client(workspace, config).jobs.tune(_load_spec(spec, config), trials=trials,
                                                       budget_minutes=budget_minutes)
        for key, value in tuning_facts(summary):
            typer.echo(f"{key}: {value}")

    _guard(debug, action)


@app.command("evaluate-model")
def evaluate_model(
    model: Annotated[str, typer.Argument(help="A registered model (NAME-distilled), a catalog name, an HF id, a local "
                                              "folder or .gguf file; with --base-url, the model name at that "
                                              "OpenAI-compatible endpoint.")],
    test_data: Annotated[Path, typer.Option("--test-data", help="JSONL test file.")],
    task: Annotated[Optional[str], typer.Option("--task", help="nli | conversation | qa | math | summarization "
                                                "(default: the registering job's task, else conversation)")] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible endpoint, e.g. "
                                                    "http://127.0.0.1:8000/v1.")] = None,
    api_key_env: Annotated[Optional[str], typer.Option("--api-key-env", help="NAME of the environment variable "
                                                       "holding the API key.")] = None,
    max_tokens: Annotated[int, typer.Option(help="New tokens per answer.")] = 128,
    max_examples: Annotated[Optional[int], typer.Option(help="Use only the first N rows.")] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size (requests in flight) of the throughput run.")] = 8,
    warmup: Annotated[int, typer.Option(help="Answers generated and discarded before timing.")] = 1,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda (local models).")] = "auto",
    metric: Annotated[Optional[list[str]], typer.Option("--metric", help="Show only these metrics (repeatable): "
                                                        "bleu, accuracy, latency, memory, ...")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    workspace: WorkspaceOption = None,
    debug: DebugOption = False,
    config: ConfigOption = None,
) -> None:
    """Score any model on a test file, without a job: task score, BLEU, latency, memory."""

    def action() -> None:
        from distilflow.compare import describe
        from distilflow.tasks import TASKS

        if task is not None and task not in TASKS:
            raise DistilflowError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
        models = _client(workspace, config, catalog=True).models
        result = models.evaluate(model, str(test_data), task_type=task, metrics=metric, max_tokens=max_tokens,
                                 max_examples=max_examples, device=device, base_url=base_url,
                                 api_key_env=api_key_env, batch_size=batch_size, warmup=warmup)
        if as_json:
            typer.echo(json.dumps(result, indent=2))
            return
        for line in describe(result):
            typer.echo(line)

    _guard(debug, action)


@app.command()
def export(
    job: Annotated[str, typer.Argument(help="The job (its name, or its spec file) whose distilled student to ship.")],
    format: Annotated[str, typer.Option("--format", help="hf (a merged folder with a model card) | gguf (one file "
                                        "for llama.cpp)")] = "hf",
    quantize: Annotated[Optional[str], typer.Option("--quantize", help="gguf only: f16 (default) | q8_0 | q4_1 | q4_0")]
    = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write (default: the job's export/ folder).")]
    = None,
    workspace: WorkspaceOption = None, debug: DebugOption = False, config: ConfigOption = None,
) -> None:
    """Ship a job's distilled student as a Hugging Face folder (with a model card) or a quantized GGUF file."""

    def action() -> None:
        written = _client(workspace, config).models.export(job, format, quantize, out)
        typer.echo(f"exported: {written}")

    _guard(debug, action)


@app.command()
def serve(
    model: Annotated[str, typer.Argument(help="A job (its distilled student), a registered model, a .gguf file or a "
                                              "Hugging Face folder.")],
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")]
    = "127.0.0.1",
    quantize: Annotated[str, typer.Option("--quantize", help="GGUF type when the model must be converted first: "
                                          "f16 | q8_0 | q4_1 | q4_0")] = "f16",
    n_ctx: Annotated[int, typer.Option("--n-ctx", help="Context length in tokens (0: the model's own).")] = 0,
    workspace: WorkspaceOption = None, debug: DebugOption = False, config: ConfigOption = None,
) -> None:
    """Serve a student over the OpenAI protocol with llama.cpp's server; prints the base_url and model name to use."""

    def action() -> None:
        from distilflow.export.serve import serve as run_server

        status = run_server(_client(workspace, config).workspace, model, host=host, port=port, quantize=quantize,
                            n_ctx=n_ctx, announce=lambda line: typer.echo(line))
        if status not in (0, -15):
            raise DistilflowError(f"the llama.cpp server stopped with status {status}")

    _guard(debug, action)


def _age(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


@jobs_app.command("list")
def jobs_list(workspace: WorkspaceOption = None, debug: DebugOption = False, config: ConfigOption = None) -> None:
    """All jobs of the workspace with their status and current stage."""

    def action() -> None:
        from rich.console import Console
        from rich.table import Table

        records = _client(workspace, config).jobs.list()
        if not records:
            typer.echo("no jobs in this workspace")
            return
        table = Table("name", "task", "status", "stage", "progress", "updated")
        for record in records:
            stage = record.current_stage
            progress = f"{stage.done}/{stage.total}" if stage and stage.total else "-"
            table.add_row(record.name, record.task_type, record.status, stage.stage if stage else "-", progress,
                          _age(record.updated_at))
        Console().print(table)

    _guard(debug, action)


@jobs_app.command("show")
def jobs_show(name: str, workspace: WorkspaceOption = None, as_json: Annotated[bool, typer.Option("--json")] = False,
              debug: DebugOption = False, config: ConfigOption = None) -> None:
    """Status, per-stage progress, registered models and the last error of one job."""

    def action() -> None:
        from dataclasses import asdict

        record = _client(workspace, config).jobs.get(name)
        if as_json:
            typer.echo(json.dumps(asdict(record), indent=2, default=str))
            return
        stage = record.current_stage
        typer.echo(f"job:     {record.name} ({record.task_type})")
        typer.echo(f"status:  {record.status}")
        typer.echo(f"stage:   {stage.stage if stage else 'all done'}")
        typer.echo(f"updated: {_age(record.updated_at)}")
        typer.echo("stages:")
        for s in record.stages:
            progress = f"{s.done}/{s.total}" if s.total else (str(s.done) if s.done else "")
            detail = f"  {s.message}" if s.message and s.status == "running" else ""
            typer.echo(f"  {s.stage:<9} {s.status:<10} {progress:>12}{detail}")
        for model in record.models:
            typer.echo(f"model:   {model.name} ({model.label}) {model.path}")
        error = record.error or next((s.error for s in record.stages if s.error), None)
        if record.status == "failed" and not error:
            error = "the job process stopped unexpectedly (killed?); run the same command again to resume"
        if error:
            typer.echo(f"last error: {error}")

    _guard(debug, action)


@jobs_app.command("cancel")
def jobs_cancel(name: str, workspace: WorkspaceOption = None, debug: DebugOption = False,
                config: ConfigOption = None) -> None:
    """Stop a running job (run it again later to resume)."""

    def action() -> None:
        record = _client(workspace, config).jobs.cancel(name)
        typer.echo(f"job {name}: {record.status}")

    _guard(debug, action)


@models_app.command("list")
def models_list(workspace: WorkspaceOption = None, debug: DebugOption = False, config: ConfigOption = None) -> None:
    """Models registered by completed jobs (NAME-distilled, NAME-baseline), with their job and report."""

    def action() -> None:
        from rich.console import Console
        from rich.table import Table

        models = _client(workspace, config).models.list()
        if not models:
            typer.echo("no registered models in this workspace (a job registers its students when it completes)")
            return
        table = Table("name", "model", "job", "task", "path", "report", "registered")
        for m in models:
            table.add_row(m.name, m.label, m.job, m.task_type, m.path, m.report or "-", _age(m.registered_at))
        Console().print(table)

    _guard(debug, action)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
