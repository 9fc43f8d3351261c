"""Finding the checkpoint to resume from."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in step order that were fully written (Trainer writes trainer_state.json last)."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found) if (p / "trainer_state.json").is_file()]


def remove_incomplete_checkpoints(folder: Path) -> None:
    """A checkpoint cut short by a kill would confuse resume and rotation: remove it."""
    if not folder.is_dir():
        return
    complete = set(complete_checkpoints(folder))
    for path in folder.iterdir():
        if _CHECKPOINT.match(path.name) and path not in complete:
            shutil.rmtree(path, ignore_errors=True)


def latest_checkpoint(folder: Path) -> str | None:
    checkpoints = complete_checkpoints(folder)
    return str(checkpoints[-1]) if checkpoints else None

