"""Finding and loading local causal LMs: hub ids, local folders, `.gguf` files and `pkg:` references.

A `.gguf` file is dequantized once by transformers and cached as a normal HF folder (safetensors),
so later loads take a second instead of ~20 s.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from distilflow.errors import DistilflowError, permission_message, unreadable_part
from distilflow.fingerprint import stat_digest
from distilflow.io import atomic_folder
from distilflow.models.prompts import CHATML_TEMPLATE

log = logging.getLogger(__name__)

def cache_home() -> Path:
    return Path(os.environ.get("DISTILFLOW_CACHE", Path.home() / ".cache" / "distilflow"))


def resolve_model_ref(ref: str) -> str:
    """`pkg:PACKAGE/FILE` -> the file inside an installed package (found without importing it)."""
    if not ref.startswith("pkg:"):
        return ref
    package, _, inner = ref[4:].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise DistilflowError(f"model {ref!r}: Python package {package!r} is not installed")
    path = Path(spec.origin).parent / inner
    if not path.exists():
        raise DistilflowError(f"model {ref!r}: {inner!r} not found in package {package!r} ({path.parent})")
    return str(path)


# Where configs state how many positions a model reads (the first found wins; multimodal configs nest the text's).
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def context_length(ref: str) -> int | None:
    """The context a local model folder's config.json states, in tokens; None where it cannot be read without a
    download or a conversion (a hub id, a .gguf file) or the config states none."""
    import json

    try:
        path = Path(resolve_model_ref(ref)) / "config.json"
        config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError, DistilflowError):
        return None
    for section in (config, config.get("text_config") or {}):
        for key in _CONTEXT_KEYS:
            if isinstance(section.get(key), int) and section[key] > 0:
                return int(section[key])
    return None


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def pick_dtype(requested: str, device: str):
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def local_model_dir(ref: str) -> str:
    """A directory (or hub id) that `from_pretrained` can load; `.gguf` files are converted once and cached."""
    ref = resolve_model_ref(ref)
    check_readable(ref)
    if ref.endswith(".gguf"):
        return str(_converted_gguf(Path(ref)))
    return ref


def check_readable(ref: str) -> None:
    """A local model (file or folder) this user may not read is one sentence naming the file and the fix, said
    before loading: transformers reports an unreadable weights file as "No such file or directory"."""
    path = Path(ref)
    blocked = unreadable_part(path)
    if blocked is not None:  # a folder on the way is named as such; a file inside the model's folder as itself
        raise DistilflowError(f"cannot load model {ref}: "
                              f"{permission_message(path if blocked in (path, *path.parents) else blocked)}")


def _converted_gguf(path: Path) -> Path:
    if not path.is_file():
        raise DistilflowError(f"GGUF file not found: {path}")
    key = stat_digest(path)
    target = cache_home() / "gguf" / f"{path.stem}-{key}"
    if (target / "config.json").exists():
        return target
    log.info("converting %s to a Hugging Face folder (once; cached at %s)", path.name, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import torch

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    # save_pretrained refuses GGUF-quantized models; rebuild a plain model from the config and weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=False)
    plain.tie_weights()
    with atomic_folder(target) as staging:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return target


def load_tokenizer(ref: str, *, padding_side: str = "left"):
    from transformers import AutoTokenizer

    source = local_model_dir(ref)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as error:
        raise DistilflowError(_not_found_message(ref, error)) from None
    prepare_tokenizer(tokenizer)
    tokenizer.padding_side = padding_side
    return tokenizer


def prepare_tokenizer(tokenizer) -> None:
    """Give a tokenizer what distilflow relies on: a pad token and a chat template."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if not getattr(tokenizer, "chat_template", None):
        log.warning("tokenizer has no chat template; using ChatML")
        tokenizer.chat_template = CHATML_TEMPLATE


def load_causal_lm(ref: str, *, device: str = "auto", dtype: str = "auto"):
    """Load a causal LM for inference or training, on the requested (or best available) device."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == "1":  # set by the CLI unless --debug
        hf_logging.disable_progress_bar()

    source = local_model_dir(ref)
    device = pick_device(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=pick_dtype(dtype, device))
    except OSError as error:
        raise DistilflowError(_not_found_message(ref, error)) from None
    return model.to(device)


def _not_found_message(ref: str, error: Exception) -> str:
    if Path(ref).exists():
        return f"cannot load model from {ref}: {str(error).splitlines()[0]}"
    return (f"cannot load model {ref!r}: it is not a local folder or .gguf file, and it is not in the "
            f"Hugging Face cache (downloads need network access)")


def model_revision(ref: str) -> str:
    """Something that changes when the weights change, so caches never serve answers of a replaced model: a local
    file's or folder's size and modification times, a hub model's resolved commit (from the local HF cache)."""
    path = Path(resolve_model_ref(ref))
    if path.exists():
        return stat_digest(path)
    try:
        from huggingface_hub import snapshot_download

        snapshot = snapshot_download(ref, local_files_only=True)  # .../snapshots/<commit>; no network
    except Exception:  # noqa: BLE001 - not a repo id, not cached: loading will say so
        return "hub"
    return f"hub@{Path(snapshot).name}"


def parameter_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def size_on_disk(path: str | Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
