"""A local model (HF id, folder, .gguf) in the measure loop, loaded in the worker process: time to first token is
the end of the prompt's forward pass, and memory is the worker's own (peak RSS on a CPU, CUDA max allocated on
a GPU), so each model's figure is its own."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distilflow.evaluate.measure import Answer, Conversation, MeasuredModel
from distilflow.evaluate.perf import FirstForwardTimer, current_rss_mb, peak_rss_mb
from distilflow.results import CUDA_MAX_ALLOCATED, PEAK_RSS


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


class LocalModel(MeasuredModel):
    ttft_source = "end of the first forward pass (prefill)"

    def __init__(self, ref: str, *, device: str, dtype: str, max_tokens: int = 0, prompt_format: str = "chat") -> None:
        from distilflow.models import GenerationParams, load_causal_lm, load_tokenizer

        self.ref, self.prompt_format = ref, prompt_format
        self.rss_before_load = current_rss_mb()
        started = time.perf_counter()
        self.tokenizer = load_tokenizer(ref)
        self.model = load_causal_lm(ref, device=device, dtype=dtype).eval()
        self.load_seconds = time.perf_counter() - started
        self.on_cuda = self.model.device.type == "cuda"
        self.params = GenerationParams(max_tokens=max_tokens or 1, temperature=0.0)  # greedy for every model

    def _generate(self, conversations: list[Conversation]) -> list[Any]:
        from distilflow.models import generate_batch

        return generate_batch(self.model, self.tokenizer, conversations, self.params, self.prompt_format)

    def synchronize(self) -> None:
        if self.on_cuda:
            import torch

            torch.cuda.synchronize()

    def warm_up(self, singles: list[Conversation], batch: list[Conversation]) -> None:
        # Kernels, allocator and lazy initialisation are excluded from every timing: single answers, and one batch.
        for messages in singles:
            self._generate([messages])
        if batch:
            self._generate(batch)
        if self.on_cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()

    def answer_one(self, messages: Conversation) -> Answer:
        timer = FirstForwardTimer(self.model)
        try:
            self.synchronize()
            start = time.perf_counter()
            output = self._generate([messages])[0]
            self.synchronize()
            seconds = time.perf_counter() - start
        finally:
            timer.close()
        ttft = None if timer.first is None else timer.first - start
        return Answer(output.texts[0], seconds, ttft, output.prompt_tokens, output.completion_tokens)

    def answer_all(self, conversations: list[Conversation], batch_size: int,
                   on_answered: Callable[[int], None]) -> list[Answer]:
        answers = []
        for start in range(0, len(conversations), batch_size):
            for output in self._generate(conversations[start:start + batch_size]):
                answers.append(Answer(output.texts[0], prompt_tokens=output.prompt_tokens,
                                      completion_tokens=output.completion_tokens))
            on_answered(len(answers))
        return answers

    def figures(self, answers: list[Answer]) -> dict[str, Any]:
        from distilflow.models import parameter_count, size_on_disk

        if self.on_cuda:
            import torch

            peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak = peak_rss_mb()
        source = _source_on_disk(self.ref)
        # What the model added on top of the bare process (imports, runtime): comparable across model sizes.
        model_memory = peak if self.on_cuda else (None if self.rss_before_load is None else peak - self.rss_before_load)
        return dict(parameters=parameter_count(self.model),
                    weights_mb=sum(p.numel() * p.element_size() for p in self.model.parameters()) / 2**20,
                    size_on_disk_mb=size_on_disk(source) / 2**20 if source is not None else None,
                    device=str(self.model.device),
                    dtype=str(next(self.model.parameters()).dtype).removeprefix("torch."),
                    load_seconds=self.load_seconds, peak_memory_mb=peak,
                    peak_memory_kind=CUDA_MAX_ALLOCATED if self.on_cuda else PEAK_RSS, model_memory_mb=model_memory,
                    process_rss_before_load_mb=self.rss_before_load, network=False)
