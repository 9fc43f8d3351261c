"""What every command shares: the typer apps, the common options, logging, and the guard that turns errors into
one sentence (no traceback unless --debug) and an exit status."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from distilflow.errors import JobCanceled, user_message

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


def setup_logging(debug: bool) -> None:
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


def guard(debug: bool, action: Callable[[], Any]) -> Any:
    """Run a command; user errors become one sentence and exit status 1. Every message and traceback is scrubbed
    of the secrets this process has read (API keys, header values)."""
    from distilflow.secrets import scrub

    setup_logging(debug)
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
        elif (message := user_message(error)) is not None:  # ours, or a file-system error the user can fix
            typer.echo(scrub(f"error: {message}"), err=True)
        else:
            first_line = (str(error).strip().splitlines() or [""])[0]
            typer.echo(scrub(f"error: internal error: {error.__class__.__name__}: {first_line} "
                             "(run with --debug for details)"), err=True)
        raise typer.Exit(1) from None


def client_for(workspace: str | None, config: str | None, *, catalog: bool = False) -> "Client":
    """The Client a command works through; the config file is read for its catalog only when `catalog`."""
    from distilflow.catalog import WorkspaceConfig, find_workspace
    from distilflow.client import Client

    if catalog:
        return Client(workspace, config=WorkspaceConfig.find(config))
    return Client(find_workspace(workspace, config))


def load_spec_file(spec_path: Path, config: str | None) -> "JobSpec":
    from distilflow.catalog import spec_resolver
    from distilflow.jobspec import load_spec

    return load_spec(spec_path, resolve=spec_resolver(config))


def age(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
