"""Scores one model in a process of its own, so its peak memory is its own and models do not pollute
each other. Run as `python -m distilflow.evaluate.worker CONFIG.json`; prints progress as JSON lines
and writes predictions.jsonl and metrics.json into the output folder."""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from distilflow.data import write_json_atomic, write_jsonl_atomic


def _emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def _peak_rss_mb() -> float:
    """Peak resident memory of this process image. VmHWM, unlike getrusage's ru_maxrss, is not
    inherited from the parent across fork+exec, so it measures this model alone."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; bytes on macOS


def evaluate_local_model(config: dict[str, Any]) -> dict[str, Any]:
    import torch

    from distilflow.local_generate import generate_batch
    from distilflow.models import load_causal_lm, load_tokenizer, parameter_count, size_on_disk, local_model_dir
    from distilflow.tasks import get_task
    from distilflow.teachers.base import GenerationParams

    task = get_task(config["task_type"])
    examples = config["examples"]
    rss_before_load = _peak_rss_mb()
    started = time.perf_counter()
    tokenizer = load_tokenizer(config["model"])
    model = load_causal_lm(config["model"], device=config.get("device", "auto"), dtype=config.get("dtype", "auto")).eval()
    load_seconds = time.perf_counter() - started
    on_cuda = model.device.type == "cuda"
    params = GenerationParams(max_tokens=config["max_tokens"], temperature=0.0)

    for example in examples[: config.get("warmup", 1)]:  # warm-up: excluded from timing
        generate_batch(model, tokenizer, [example["messages"]], params)
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()

    predictions, latencies, output_tokens = [], [], 0
    for i, example in enumerate(examples):
        start = time.perf_counter()
        output = generate_batch(model, tokenizer, [example["messages"]], params)[0]
        if on_cuda:
            torch.cuda.synchronize()
        latencies.append(time.perf_counter() - start)
        output_tokens += output.completion_tokens
        predictions.append({"id": example["id"], "prediction": output.texts[0], "reference": example["reference"],
                            "latency_s": latencies[-1], "output_tokens": output.completion_tokens})
        _emit(progress=i + 1, total=len(examples))

    scored = [p for p in predictions if p["reference"] is not None]
    metrics = task.score([p["prediction"] for p in scored], [p["reference"] for p in scored]) if scored else {}
    source = Path(local_model_dir(config["model"]))
    total_time = sum(latencies)
    result = {
        "label": config["label"],
        "model": config["model"],
        "task_metrics": metrics,
        "primary_metric": task.primary_metric,
        "scored_examples": len(scored),
        "examples": len(predictions),
        "latency_mean_s": statistics.fmean(latencies) if latencies else None,
        "latency_p50_s": statistics.median(latencies) if latencies else None,
        "output_tokens_per_s": output_tokens / total_time if total_time else None,
        "parameters": parameter_count(model),
        "weights_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20,
        "size_on_disk_mb": size_on_disk(source) / 2**20 if source.exists() else None,
        "device": str(model.device),
        "load_seconds": load_seconds,
        "peak_memory_mb": (torch.cuda.max_memory_allocated() / 2**20) if on_cuda else _peak_rss_mb(),
        "peak_memory_kind": "cuda_max_allocated" if on_cuda else "process_peak_rss",
        "process_rss_before_load_mb": rss_before_load,
        "fingerprint": config.get("fingerprint"),
    }
    out = Path(config["output_dir"])
    write_jsonl_atomic(out / "predictions.jsonl", predictions)
    write_json_atomic(out / "metrics.json", result)
    return result


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[0]).read_text())
    evaluate_local_model(config)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
