"""The one hashing helper: stable digests of JSON-able parts, of files, and of folders of weights.

Every cache key, stage fingerprint and model revision in distilflow goes through here, so two places never
hash the same thing two ways.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

SHORT = 16  # hex digits kept where a digest names a folder or fingerprints a stage (64 bits)


def digest(value: Any, length: int | None = SHORT) -> str:
    """sha256 of `value` as canonical JSON (sorted keys; other objects through str()); `length=None` keeps all 64
    hex digits. Several parts are hashed as one list: `digest([a, b])`."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    full = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return full if length is None else full[:length]


def file_digest(path: str | Path, length: int | None = SHORT) -> str:
    """sha256 of a file's bytes, read in blocks (data files can be large)."""
    hasher = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    full = hasher.hexdigest()
    return full if length is None else full[:length]


def stat_digest(path: str | Path) -> str:
    """A cheap digest that changes when a file is replaced or edited (size and modification time), not its bytes:
    for multi-GB weights, hashing the content on every run would cost more than the run."""
    path = Path(path)
    if path.is_file():
        stat = path.stat()
        return digest([stat.st_size, stat.st_mtime_ns])
    stamps = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir()
                    if f.suffix in (".safetensors", ".bin", ".gguf"))
    return digest(stamps)
