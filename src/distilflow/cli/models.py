"""The commands about models and their data: evaluate-model, export, serve, ui, models list, inputs-from-logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from distilflow.cli.common import (
    ConfigOption,
    DebugOption,
    WorkspaceOption,
    age,
    app,
    client_for,
    guard,
    models_app,
)
from distilflow.errors import DistilflowError
from distilflow.jobspec import TASK_TYPES, evaluation_default


@app.command("evaluate-model")
def evaluate_model(
    model: Annotated[str, typer.Argument(help="A registered model (NAME-distilled), a catalog name, an HF id, a local "
                                              "folder or .gguf file; with --base-url, the model name at that "
                                              "OpenAI-compatible endpoint.")],
    test_data: Annotated[Path, typer.Option("--test-data", help="JSONL test file.")],
    task: Annotated[Optional[str], typer.Option("--task", help=f"{' | '.join(TASK_TYPES)} (default: the "
                                                "registering job's task, else conversation)")] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible endpoint, e.g. "
                                                    "http://127.0.0.1:8000/v1.")] = None,
    api_key_env: Annotated[Optional[str], typer.Option("--api-key-env", help="NAME of the environment variable "
                                                       "holding the API key.")] = None,
    # Defaults are the job spec's (`evaluation:`), read from it: one default per setting.
    max_tokens: Annotated[int, typer.Option(help="New tokens per answer.")] = evaluation_default("max_tokens"),
    max_examples: Annotated[Optional[int], typer.Option(help="Use only the first N rows.")] = None,
    throughput_batch_size: Annotated[int, typer.Option("--throughput-batch-size", "--batch-size", help="Batch (a "
                                     "local model) or requests in flight (an endpoint) of the throughput run.")]
    = evaluation_default("throughput_batch_size"),
    warmup: Annotated[int, typer.Option(help="Answers discarded before timing.")] = evaluation_default("warmup"),
    device: Annotated[str, typer.Option(help="auto | cpu | cuda (local models).")] = evaluation_default("device"),
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
        models = client_for(workspace, config, catalog=True).models
        result = models.evaluate(model, str(test_data), task_type=task, metrics=metric, max_tokens=max_tokens,
                                 max_examples=max_examples, device=device, base_url=base_url,
                                 api_key_env=api_key_env, throughput_batch_size=throughput_batch_size, warmup=warmup)
        if as_json:
            typer.echo(json.dumps(result, indent=2))
            return
        for line in describe(result):
            typer.echo(line)

    guard(debug, action)


@app.command()
def export(
    job: Annotated[str, typer.Argument(help="The job (its name, or its spec file) whose distilled student to ship.")],
    format: Annotated[str, typer.Option("--format", help="hf (a merged folder with a model card) | gguf (one file "
                                        "for llama.cpp) | ollama (the GGUF file and a Modelfile)")] = "hf",
    quantize: Annotated[Optional[str], typer.Option("--quantize", help="gguf, ollama: f16 (default) | q8_0 | q4_1 | q4_0")]
    = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write (default: the job's export/ folder).")]
    = None,
    workspace: WorkspaceOption = None, debug: DebugOption = False, config: ConfigOption = None,
) -> None:
    """Ship a job's distilled student as a Hugging Face folder (with a model card), a GGUF file, or both for Ollama."""

    def action() -> None:
        written = client_for(workspace, config).models.export(job, format, quantize, out)
        typer.echo(f"exported: {written}")

    guard(debug, action)


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
    logprobs: Annotated[bool, typer.Option("--logprobs", help="Answer with log-probs (a teacher for sparse_kd or a "
                                           "served on_policy teacher); keeps logits of every position in memory.")]
    = False,
    workspace: WorkspaceOption = None, debug: DebugOption = False, config: ConfigOption = None,
) -> None:
    """Serve a student over the OpenAI protocol with llama.cpp's server; prints the base_url and model name to use."""

    def action() -> None:
        from distilflow.export.serve import serve as run_server

        status = run_server(client_for(workspace, config).workspace, model, host=host, port=port, quantize=quantize,
                            n_ctx=n_ctx, logprobs=logprobs, announce=lambda line: typer.echo(line))
        if status not in (0, -15):
            raise DistilflowError(f"the llama.cpp server stopped with status {status}")

    guard(debug, action)


@app.command()
def ui(port: Annotated[Optional[int], typer.Option("--port", help="Port (default 8765; 0: any free one).")] = None,
       host: Annotated[str, typer.Option("--host", help="Address (any but loopback needs the token).")] = "127.0.0.1",
       token: Annotated[Optional[str], typer.Option("--token", envvar="DISTILFLOW_UI_TOKEN", help="Off loopback: the "
                                                    "token every request needs (default: a new one, printed).")] = None,
       workspace: WorkspaceOption = None, debug: DebugOption = False, config: ConfigOption = None) -> None:
    """The dashboard in the browser: live jobs, job pages (cancel, resume), compare, models (docs/ui.md)."""
    guard(debug, lambda: client_for(workspace, config).ui(host=host, port=port, token=token,
                                                        announce=lambda line: typer.echo(line)))


@models_app.command("list")
def models_list(workspace: WorkspaceOption = None, debug: DebugOption = False, config: ConfigOption = None) -> None:
    """Models registered by completed jobs (NAME-distilled, NAME-baseline), with their job and report."""

    def action() -> None:
        from rich.console import Console
        from rich.table import Table

        models = client_for(workspace, config).models.list()
        if not models:
            typer.echo("no registered models in this workspace (a job registers its students when it completes)")
            return
        table = Table("name", "model", "job", "task", "path", "report", "registered")
        for m in models:
            table.add_row(m.name, m.label, m.job, m.task_type, m.path, m.report or "-", age(m.registered_at))
        Console().print(table)

    guard(debug, action)


@app.command("inputs-from-logs")
def inputs_from_logs(
    logs: Annotated[Path, typer.Argument(help="JSONL chat logs: chat-completions requests (with or without their "
                                              "responses), stored-completions exports, or rows with 'messages'.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for inputs.jsonl (and recorded.jsonl).")],
    answers: Annotated[str, typer.Option("--answers", help="keep: the logged answers become recorded teacher answers; "
                                                          "discard: the job's teacher answers afresh.")] = "keep",
    debug: DebugOption = False,
) -> None:
    """Turn chat logs into training inputs, keeping or discarding the answers in them."""
    def action() -> None:
        from distilflow.teachers.logs import import_logs

        if answers not in ("keep", "discard"):
            raise DistilflowError(f"--answers is keep or discard, not {answers!r}")
        typer.echo(import_logs(logs, out, answers).summary())  # type: ignore[arg-type]

    guard(debug, action)
