"""Process rank in a multi-process launch (accelerate / torchrun): only the main process writes job state."""

from __future__ import annotations

import os


def is_main_process() -> bool:
    """False in the extra ranks of a distributed launch: they train, but never write files or the job record."""
    return int(os.environ.get("RANK", "0")) == 0
