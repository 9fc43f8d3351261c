"""Speed and memory measurement helpers of the measure loop and the local model."""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass
from typing import Any


def _status_kib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process image. VmHWM, unlike getrusage's ru_maxrss, is not
    inherited from the parent across fork+exec, so in a worker process it measures that model alone."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; bytes on macOS


def current_rss_mb() -> float | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / 1024


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolation percentile (numpy's default method), q in 0..100."""
    if not values:
        return None
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q))


@dataclass(frozen=True)
class Spread:
    """Mean, median and 95th percentile of a list of seconds (None when the list is empty)."""

    mean: float | None
    p50: float | None
    p95: float | None

    @classmethod
    def of(cls, values: list[float]) -> "Spread":
        return cls(statistics.fmean(values) if values else None, percentile(values, 50), percentile(values, 95))


class FirstForwardTimer:
    """Time to first token of a local model: `generate` runs one forward pass per new token, and the end
    of the first one (the prompt's prefill) is when the first token exists. A forward hook records it
    without changing how generation runs; a streamer would need its own generate call and thread.
    One timer per answer: `first` is that answer's."""

    def __init__(self, model: Any) -> None:
        self.first: float | None = None
        self._cuda = getattr(model, "device", None) is not None and model.device.type == "cuda"
        self._handle = model.register_forward_hook(self._on_forward)

    def _on_forward(self, *args: Any) -> None:
        if self.first is None:
            if self._cuda:
                import torch

                torch.cuda.synchronize()
            self.first = time.perf_counter()

    def close(self) -> None:
        self._handle.remove()
