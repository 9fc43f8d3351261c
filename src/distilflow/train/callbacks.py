"""The Trainer callback behind the stage's progress bar (loss, distillation terms, tokens/s; the bar shows the ETA),
job-store progress, cancel checks, and student/train_log.json. Used by the main process only."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from distilflow.io import write_json_atomic
from distilflow.jobs.progress import StageProgress


class ProgressCallback(TrainerCallback):
    def __init__(self, progress: StageProgress, log_path: Path) -> None:
        self.progress = progress
        self.log_path = log_path
        # Keep earlier entries across a resume, dropping any logged after the checkpoint we resume from.
        self.history: list[dict[str, Any]] = json.loads(log_path.read_text()) if log_path.exists() else []
        self._last_tokens: tuple[float, float] | None = None  # (time, tokens seen) at the previous log

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        self.history = [h for h in self.history if h.get("step", 0) <= state.global_step]
        self.progress.set_total(state.max_steps)
        self.progress.update(state.global_step)
        self._last_tokens = (time.monotonic(), 0.0)  # TRL counts tokens from 0 in each run (resumed or not)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        self.progress.update(state.global_step)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs:
            return
        entry = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        entry.update({k: float(v) for k, v in logs.items() if isinstance(v, (int, float))})
        tokens_per_second = self._tokens_per_second(logs)
        if tokens_per_second is not None:
            entry["tokens_per_second"] = tokens_per_second
        self.history.append(entry)
        write_json_atomic(self.log_path, self.history)
        parts = [f"{label} {logs[key]:.4f}" for key, label in
                 (("loss", "loss"), ("kd_loss", "kd"), ("ce_loss", "ce"), ("eval_loss", "val loss")) if key in logs]
        if tokens_per_second is not None:
            parts.append(f"{tokens_per_second:,.0f} tok/s")
        if parts:
            self.progress.note("  ".join(parts))

    def _tokens_per_second(self, logs: dict[str, Any]) -> float | None:
        """Training tokens per second since the previous log (TRL logs the running count as num_tokens)."""
        if "num_tokens" not in logs or "loss" not in logs:
            return None
        now, tokens = time.monotonic(), float(logs["num_tokens"])
        previous, self._last_tokens = self._last_tokens, (now, tokens)
        if previous is None or now <= previous[0] or tokens < previous[1]:
            return None
        return (tokens - previous[1]) / (now - previous[0])
