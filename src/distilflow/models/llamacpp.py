"""llama.cpp (llama-cpp-python) for GGUF files: in-process loading and the OpenAI-compatible server's command line.

Both switch llama.cpp's weight repacking off (`use_extra_bufts = False`): on CPUs with AMX the repacked Q4 kernels of
llama-cpp-python 0.3.36 crash on the first decode (segfault), while the plain kernels answer correctly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from distilflow.errors import DistilflowError

# Run as `python -c SERVER_BOOTSTRAP --model ...`: llama_cpp.server with repacking off.
SERVER_BOOTSTRAP = ("import runpy, llama_cpp, llama_cpp.llama as L\n"
                    "default = llama_cpp.llama_model_default_params\n"
                    "def params():\n    p = default(); p.use_extra_bufts = False; return p\n"
                    "L.llama_cpp.llama_model_default_params = params\n"
                    "runpy.run_module('llama_cpp.server', run_name='__main__')\n")


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DistilflowError(f"{module} is not installed: pip install 'llama-cpp-python[server]' to run GGUF files "
                              "with llama.cpp") from None


def load_llama(path: str | Path, **kwargs: Any) -> Any:
    """A `llama_cpp.Llama` for a GGUF file, repacking off; keyword arguments go to Llama (n_ctx, logits_all...)."""
    llama_cpp = _require("llama_cpp")
    default = llama_cpp.llama_model_default_params

    def params() -> Any:
        p = default()
        p.use_extra_bufts = False
        return p

    llama_cpp.llama.llama_cpp.llama_model_default_params = params
    try:
        return llama_cpp.Llama(str(path), verbose=kwargs.pop("verbose", False), **kwargs)
    finally:
        llama_cpp.llama.llama_cpp.llama_model_default_params = default


def server_command(gguf: str | Path, *, host: str, port: int, alias: str, n_ctx: int = 2048,
                   extra: list[str] | None = None) -> list[str]:
    """The command that serves `gguf` over the OpenAI protocol at http://HOST:PORT/v1 as model `alias`."""
    _require("llama_cpp.server")
    return [sys.executable, "-c", SERVER_BOOTSTRAP, "--model", str(gguf), "--host", host, "--port", str(port),
            "--n_ctx", str(n_ctx), "--model_alias", alias, *(extra or [])]
