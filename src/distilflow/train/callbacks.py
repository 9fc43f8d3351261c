"""Trainer callbacks: the stage's progress bar and job-store progress, cancel checks, and a loss log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from distilflow.data import write_json_atomic
from distilflow.progress import StageProgress


class ProgressCallback(TrainerCallback):
    def __init__(self, progress: StageProgress, log_path: Path) -> None:
        self.progress = progress
        self.log_path = log_path
        # Keep earlier entries across a resume, dropping any logged after the checkpoint we resume from.
        self.history: list[dict[str, Any]] = json.loads(log_path.read_text()) if log_path.exists() else []

    def on_train_begin(self, args, state, control, **kwargs):
        self.history = [h for h in self.history if h.get("step", 0) <= state.global_step]
        self.progress.set_total(state.max_steps)
        self.progress.update(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self.progress.update(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        entry = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        entry.update({k: float(v) for k, v in logs.items() if isinstance(v, (int, float))})
        self.history.append(entry)
        write_json_atomic(self.log_path, self.history)
        parts = []
        if "loss" in logs:
            parts.append(f"loss {logs['loss']:.4f}")
        if "eval_loss" in logs:
            parts.append(f"val loss {logs['eval_loss']:.4f}")
        if parts:
            self.progress.note("  ".join(parts))
