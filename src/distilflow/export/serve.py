"""`distilflow serve JOB|MODEL`: an OpenAI-compatible endpoint for a student, with llama.cpp's server (it runs offline
on a CPU). A GGUF file is served as it is; a job's student, a registered model or a Hugging Face folder is first
exported to GGUF (f16 unless told otherwise, kept and reused while the weights do not change). On a GPU, vLLM serves
the exported HF folder instead (README, "Serving the student")."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from distilflow.errors import DistilflowError
from distilflow.fingerprint import stat_digest
from distilflow.jobs.store import JobStore
from distilflow.models import cache_home, resolve_model_ref
from distilflow.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    gguf: Path
    name: str  # the model name clients send


def _job_names(workspace: Workspace) -> set[str]:
    if not workspace.db_path.exists():
        return set()
    return {record.name for record in JobStore(workspace.db_path).list()}


def _folder_as_gguf(folder: Path, quantize: str) -> Path:
    """An HF folder converted once per version of its weights, under $DISTILFLOW_CACHE/serve/."""
    from distilflow.export.to_gguf import write_gguf

    target = cache_home() / "serve" / f"{folder.name}-{stat_digest(folder)}-{quantize}.gguf"
    if not target.exists():
        log.info("converting %s to GGUF %s (once; cached at %s)", folder, quantize, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_gguf(folder, target, quantize, name=folder.name)
    return target


def resolve_served(workspace: Workspace, model: str, quantize: str) -> Served:
    """What `model` names (a job, a registered model, a .gguf file or an HF folder) as a GGUF file to serve."""
    from distilflow.export import ExportSource, export_job
    from distilflow.jobs.registry import find_model

    if model in _job_names(workspace):
        source = ExportSource.of(workspace, model)
        target = source.default_target("gguf", quantize)
        fresh = target.exists() and target.stat().st_mtime >= max(
            p.stat().st_mtime for p in source.paths.student_final.iterdir())
        return Served(target if fresh else export_job(workspace, model, "gguf", quantize), source.name)
    registered = find_model(JobStore(workspace.db_path), model) if workspace.db_path.exists() else None
    path = Path(resolve_model_ref(registered.path if registered else model)).expanduser()
    name = model if registered else path.name.removesuffix(".gguf")
    if path.is_file() and path.suffix == ".gguf":
        return Served(path, name)
    if (path / "config.json").is_file():
        return Served(_folder_as_gguf(path, quantize), name)
    raise DistilflowError(f"nothing to serve at {model!r}: give a job name, a registered model, a .gguf file or a "
                          "Hugging Face folder")


def _wait_until_up(process: subprocess.Popen, base_url: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise DistilflowError(f"the llama.cpp server exited with status {process.returncode} before it answered")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                process.terminate()
                raise DistilflowError(f"the llama.cpp server did not answer within {timeout_s:.0f} s") from None
            time.sleep(0.5)


def serve(workspace: Workspace, model: str, *, host: str = "127.0.0.1", port: int = 8000, quantize: str = "f16",
          n_ctx: int = 0, logprobs: bool = False, announce=print) -> int:
    """Serve until interrupted (Ctrl+C or SIGTERM); announces the base_url and model name once it answers.
    `logprobs`: llama-cpp-python answers with log-probs (and echoes prompt scores) only when it keeps the logits
    of every position, which costs n_ctx x vocabulary floats; so it is asked for, not the default."""
    from distilflow.models.llamacpp import server_command

    served = resolve_served(workspace, model, quantize)
    base_url = f"http://{host}:{port}/v1"
    process = subprocess.Popen(server_command(served.gguf, host=host, port=port, alias=served.name, n_ctx=n_ctx,
                                              extra=["--verbose", "false",
                                                     *(["--logits_all", "true"] if logprobs else [])]))
    previous = signal.signal(signal.SIGTERM, lambda *_: process.terminate())
    try:
        _wait_until_up(process, base_url)
        announce(f"base_url: {base_url}")
        announce(f"model: {served.name}")
        announce(f"serving {served.gguf} with llama.cpp; stop with Ctrl+C")
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
