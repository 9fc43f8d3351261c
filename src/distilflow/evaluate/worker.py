"""Scores one model in a process of its own, so its peak memory is its own and models do not pollute
each other. Run as `python -m distilflow.evaluate.worker CONFIG.json`; prints progress as JSON lines
and writes predictions.jsonl and metrics.json into the output folder.

CONFIG: label, model, kind ("local" | "api"), task_type, examples [{id, messages, reference}], max_tokens,
warmup, batch_size, throughput, device, bootstrap_samples, bootstrap_seed, output_dir, fingerprint, and for
"api" base_url, api_key_env (a variable NAME), api_version, headers, timeout, max_retries, prices.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from distilflow.io import write_json_atomic, write_jsonl_atomic
from distilflow.errors import DistilflowError

# Config keys copied into metrics.json (never a key: only the NAME of its variable is ever in a config).
_DESCRIBED = ("base_url", "api_key_env", "max_tokens", "warmup", "batch_size", "note")


def _emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def finish(config: dict[str, Any], predictions: list[dict[str, Any]], figures: dict[str, Any]) -> dict[str, Any]:
    """Score the predictions (with bootstrap intervals) and write predictions.jsonl and metrics.json."""
    from distilflow.tasks.scoring import score_with_intervals
    from distilflow.tasks import get_task

    task = get_task(config["task_type"])
    scores = score_with_intervals(task, predictions, int(config.get("bootstrap_samples", 1000)),
                                  int(config.get("bootstrap_seed", 0)))
    result = {
        "label": config["label"],
        "model": config["model"],
        "kind": config.get("kind", "local"),
        "evaluated": True,
        "task_type": config["task_type"],
        "primary_metric": task.primary_metric,
        **scores,
        "examples": len(predictions),
        **figures,
        **{k: config[k] for k in _DESCRIBED if config.get(k) is not None},
        "fingerprint": config.get("fingerprint"),
    }
    out = Path(config["output_dir"])
    write_jsonl_atomic(out / "predictions.jsonl", predictions)
    write_json_atomic(out / "metrics.json", result)
    return result


def evaluate(config: dict[str, Any]) -> dict[str, Any]:
    def progress(done: int, total: int) -> None:
        _emit(progress=done, total=total)

    if config.get("kind") == "api":
        from distilflow.evaluate.api import evaluate_api

        predictions, figures = evaluate_api(config, progress)
    else:
        from distilflow.evaluate.local import evaluate_local

        predictions, figures = evaluate_local(config, progress)
    return finish(config, predictions, figures)


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[0]).read_text())
    try:
        evaluate(config)
    except DistilflowError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)  # one sentence; the parent shows it as is
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
