"""Measuring a local model (HF id, folder, .gguf) in the worker process: answers at batch size 1 (latency,
time to first token), then throughput at the evaluation batch size, then peak memory and size."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distilflow.evaluate.perf import FirstForwardTimer, current_rss_mb, latency_summary, peak_rss_mb


def _source_on_disk(ref: str) -> Path | None:
    """What the user ships: the .gguf file itself, a local folder, or the hub cache snapshot of an id."""
    from distilflow.models import resolve_model_ref

    path = Path(resolve_model_ref(ref))
    if path.exists():
        return path
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(ref, "config.json")
    except Exception:  # not a valid repo id
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def last_user_text(messages: list[dict[str, str]]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def evaluate_local(config: dict[str, Any], on_progress: Callable[[int, int], None]) -> tuple[list[dict], dict]:
    import torch

    from distilflow.models import (GenerationParams, generate_batch, load_causal_lm, load_tokenizer, parameter_count,
                                   size_on_disk)

    examples = config["examples"]
    batch_size = int(config.get("batch_size", 8))
    rss_before_load = current_rss_mb()
    started = time.perf_counter()
    tokenizer = load_tokenizer(config["model"])
    model = load_causal_lm(config["model"], device=config.get("device", "auto"), dtype=config.get("dtype", "auto")).eval()
    load_seconds = time.perf_counter() - started
    on_cuda = model.device.type == "cuda"
    params = GenerationParams(max_tokens=config["max_tokens"], temperature=0.0)  # greedy for every model

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize()

    # Warm-up (kernels, allocator, lazy init) is excluded from every timing: single answers, and one batch.
    warmup = examples[: config.get("warmup", 1)]
    for example in warmup:
        generate_batch(model, tokenizer, [example["messages"]], params)
    if warmup and config.get("throughput", True) and batch_size > 1:
        generate_batch(model, tokenizer, [e["messages"] for e in examples[:batch_size]], params)
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()

    timer = FirstForwardTimer(model)
    predictions, latencies, first_token, output_tokens = [], [], [], 0
    steps = len(examples) * (2 if config.get("throughput", True) else 1)
    for i, example in enumerate(examples):
        timer.reset()
        sync()
        start = time.perf_counter()
        output = generate_batch(model, tokenizer, [example["messages"]], params)[0]
        sync()
        latencies.append(time.perf_counter() - start)
        ttft = None if timer.first is None else timer.first - start
        if ttft is not None:
            first_token.append(ttft)
        output_tokens += output.completion_tokens
        predictions.append({"id": example["id"], "input": last_user_text(example["messages"]),
                            "prediction": output.texts[0], "reference": example["reference"],
                            "latency_s": latencies[-1], "ttft_s": ttft, "output_tokens": output.completion_tokens})
        on_progress(i + 1, steps)
    timer.close()

    throughput: dict[str, Any] = {"throughput_batch_size": batch_size}
    if config.get("throughput", True):
        batch_tokens = 0
        sync()
        batch_start = time.perf_counter()
        for start_index in range(0, len(examples), batch_size):
            batch = examples[start_index:start_index + batch_size]
            outputs = generate_batch(model, tokenizer, [e["messages"] for e in batch], params)
            batch_tokens += sum(o.completion_tokens for o in outputs)
            on_progress(len(examples) + start_index + len(batch), steps)
        sync()
        elapsed = time.perf_counter() - batch_start
        throughput.update(throughput_answers_per_s=len(examples) / elapsed if elapsed else None,
                          throughput_output_tokens_per_s=batch_tokens / elapsed if elapsed else None,
                          throughput_seconds=elapsed)

    source = _source_on_disk(config["model"])
    total_time = sum(latencies)
    peak = torch.cuda.max_memory_allocated() / 2**20 if on_cuda else peak_rss_mb()
    figures = {
        **latency_summary("latency", latencies),
        **latency_summary("ttft", first_token),
        "ttft_source": "end of the first forward pass (prefill)",
        "output_tokens": output_tokens,
        "output_tokens_per_s": output_tokens / total_time if total_time else None,  # at batch size 1
        **throughput,
        "parameters": parameter_count(model),
        "weights_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20,
        "size_on_disk_mb": size_on_disk(source) / 2**20 if source is not None else None,
        "device": str(model.device),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "load_seconds": load_seconds,
        "peak_memory_mb": peak,
        "peak_memory_kind": "cuda_max_allocated" if on_cuda else "process_peak_rss",
        # What the model added on top of the bare process (imports, runtime): comparable across model sizes.
        "model_memory_mb": peak if on_cuda else (None if rss_before_load is None else peak - rss_before_load),
        "process_rss_before_load_mb": rss_before_load,
        "network": False,
    }
    return predictions, figures
