"""Each model is scored in a process of its own, so its peak memory is its own and models do not pollute each
other. `run_worker` (the parent) starts `python -m distilflow.evaluate.worker CONFIG.json` (a WorkerConfig),
relays its progress (JSON lines on stdout) and returns the ModelResult it wrote; `main` is the worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from distilflow.errors import DistilflowError, StageError
from distilflow.evaluate.config import WorkerConfig
from distilflow.results import ModelResult

if TYPE_CHECKING:
    from distilflow.evaluate.measure import MeasuredModel

_STDERR_LINES_KEPT = 200  # the worker's own error is its last line; warnings before it can be many
_PARENT_ENV = "DISTILFLOW_WORKER_PARENT"  # the pid of the process that started the worker
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


# ----- the parent -----------------------------------------------------------------------------------------------


def _worker_env() -> dict[str, str]:
    source = str(Path(__file__).resolve().parents[2])  # this distilflow, also when it is not installed
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env[_PARENT_ENV] = str(os.getpid())
    return env


def _keep_tail(stream: Iterable[str], tail: deque[str]) -> threading.Thread:
    """Read `stream` to its end in a thread (a full stderr pipe would block the worker while the parent
    waits on stdout), keeping its last lines."""
    thread = threading.Thread(target=lambda: tail.extend(line.strip() for line in stream if line.strip()),
                              daemon=True)
    thread.start()
    return thread


def _relay_progress(stdout: Iterable[str], on_progress: Callable[[int, int], None]) -> None:
    for line in stdout:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a library printing to stdout
        if isinstance(event, dict) and "progress" in event:
            on_progress(event["progress"], event["total"])


def run_process(command: list[str], on_progress: Callable[[int, int], None]) -> tuple[int, list[str]]:
    """Run `command`, relaying the progress events it prints; its exit status and the last lines of its stderr
    (both pipes are read at once: a worker that warns a lot must not block on a full stderr pipe)."""
    tail: deque[str] = deque(maxlen=_STDERR_LINES_KEPT)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=_worker_env())
    reader = _keep_tail(process.stderr, tail)  # type: ignore[arg-type]
    try:
        _relay_progress(process.stdout, on_progress)  # type: ignore[arg-type]
    except BaseException:
        process.kill()  # canceled (or the parent failed): the worker must not outlive it
        raise
    finally:
        process.wait()
        reader.join()
    return process.returncode, list(tail)


def run_worker(config: WorkerConfig, on_progress: Callable[[int, int], None]) -> ModelResult:
    """Run one evaluation worker process; relay its progress; return its result."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        handle.write(config.model_dump_json())
    try:
        status, stderr = run_process([sys.executable, "-m", "distilflow.evaluate.worker", handle.name], on_progress)
    finally:
        os.unlink(handle.name)
    if status != 0:
        ours = [line.removeprefix("error: ") for line in stderr if line.startswith("error: ")]
        reason = (ours or stderr or [f"the worker process stopped (exit status {status})"])[-1]
        raise StageError(f"evaluating {config.label} ({config.model}) failed: {reason}")
    result = ModelResult.read(config.metrics_path)
    if result is None:
        raise StageError(f"evaluating {config.label} ({config.model}) failed: the worker wrote no results")
    return result


# ----- the worker -----------------------------------------------------------------------------------------------


def _emit_progress(done: int, total: int) -> None:
    print(json.dumps({"progress": done, "total": total}), flush=True)


def open_model(config: WorkerConfig) -> "MeasuredModel":
    if config.kind == "api":
        from distilflow.evaluate.api import ApiModel
        from distilflow.models.openai import OpenAIEndpoint
        from distilflow.teachers.cache import TeacherCache

        assert config.endpoint is not None  # WorkerConfig checks it
        cache = TeacherCache(config.cache_path) if config.cache_path else None
        return ApiModel(OpenAIEndpoint(config.endpoint, config.endpoint_section), config.settings.max_tokens, cache)
    if config.kind == "local" and config.choices:
        from distilflow.evaluate.ranked import RankedLocalModel

        return RankedLocalModel(config.model, device=config.settings.device, dtype=config.dtype,
                                prompt_format=config.prompt_format, choices=config.choices,
                                label_offsets=config.label_offsets,
                                uncached_examples=config.settings.uncached_examples)
    if config.kind == "local":
        from distilflow.evaluate.local import LocalModel

        return LocalModel(config.model, device=config.settings.device, dtype=config.dtype,
                          max_tokens=config.settings.max_tokens, prompt_format=config.prompt_format)
    raise DistilflowError(f"a {config.kind} model has nothing to run in a worker process")


def evaluate(config: WorkerConfig) -> ModelResult:
    from distilflow.evaluate.measure import measure
    from distilflow.evaluate.save import save_result

    model = open_model(config)
    try:
        predictions, figures = measure(model, config.examples, config.settings, _emit_progress)
    finally:
        model.close()
    return save_result(config, predictions, figures)


def die_with_parent() -> None:
    """End this worker when the process that started it ends, `kill -9` included (it can catch nothing, so it
    cannot stop its workers itself). On Linux the kernel sends SIGKILL then (PR_SET_PDEATHSIG); elsewhere the
    worker stops at its next progress line, when the pipe to its dead parent breaks."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    parent = os.environ.get(_PARENT_ENV)
    if parent and os.getppid() != int(parent):  # the parent died before the line above took effect
        os._exit(1)


def main(argv: list[str]) -> int:
    die_with_parent()
    config = WorkerConfig.model_validate_json(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        evaluate(config)
    except DistilflowError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)  # one sentence; the parent shows it as is
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
