"""`distilflow evaluate-model`: score any model on a test file, no job needed."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from distilflow.data import read_examples
from distilflow.evaluate.runner import run_worker
from distilflow.progress import StageProgress
from distilflow.tasks import get_task
from distilflow.workspace import Workspace

# Names a user may ask for in `metrics=[...]`, mapped to the figures of the worker's result.
METRIC_ALIASES = {"inference_time": "latency_mean_s", "latency": "latency_mean_s", "memory": "peak_memory_mb"}


def evaluate_model(workspace: Workspace, model: str, test_data: str, task_type: str, *,
                   metrics: list[str] | None = None, max_tokens: int = 128, max_examples: int | None = None,
                   device: str = "auto") -> dict[str, Any]:
    task = get_task(task_type)
    examples = read_examples(test_data, task, "test", limit=max_examples)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{hashlib.sha256(model.encode()).hexdigest()[:8]}"
    output_dir = workspace.root / "evaluations" / run_id
    payload = [{"id": x.id, "messages": x.messages, "reference": x.reference} for x in examples]
    config = {"label": model, "model": model, "task_type": task_type, "examples": payload, "max_tokens": max_tokens,
              "warmup": 1, "device": device, "output_dir": str(output_dir)}
    with StageProgress(None, "", "evaluate", len(payload), f"evaluating {model}") as progress:
        result = run_worker(config, lambda done, total: progress.update(done))
    flat = {**result["task_metrics"], **{k: v for k, v in result.items() if k != "task_metrics"}}
    flat["output_dir"] = str(output_dir)
    if metrics:
        wanted = {METRIC_ALIASES.get(m, m) for m in metrics}
        flat = {k: v for k, v in flat.items() if k in wanted or k in ("label", "model", "output_dir")}
    return flat
