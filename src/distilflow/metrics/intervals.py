"""Bootstrap confidence intervals for any metric given as per-example sufficient statistics.

Resampling the examples with replacement and recomputing the score from the summed statistics of each
resample is the percentile bootstrap; for BLEU/chrF it resamples the corpus (sacrebleu's method, with
the same index draw and the same order statistics, so our bounds agree with sacrebleu's own interval).
Written with numpy because scipy (whose `stats.bootstrap` covers only the mean-like case) is not a
dependency and corpus metrics need the sum-of-statistics form anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distilflow.metrics.text import MetricStats

CONFIDENCE = 0.95
_CHUNK_CELLS = 4_000_000  # resample rows x examples x stats held at once (bounds memory on large test sets)


@dataclass
class Interval:
    value: float | None
    low: float | None
    high: float | None
    n: int
    samples: int
    confidence: float = CONFIDENCE

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n, "samples": self.samples,
                "confidence": self.confidence}


def bootstrap_scores(stats: MetricStats, samples: int, seed: int = 0) -> list[float]:
    """The metric on `samples` resamples (with replacement) of the examples."""
    import numpy as np

    if stats.n == 0 or samples <= 0:
        return []
    table = np.asarray(stats.rows, dtype=np.float64)
    rng = np.random.default_rng(seed)
    indices = rng.choice(stats.n, size=(samples, stats.n), replace=True)
    per_chunk = max(1, _CHUNK_CELLS // max(1, table.size))
    scores: list[float] = []
    for start in range(0, samples, per_chunk):
        sums = table[indices[start:start + per_chunk]].sum(axis=1)
        scores.extend(stats.aggregate(row) for row in sums)
    return scores


def percentile_bounds(scores: list[float], confidence: float = CONFIDENCE) -> tuple[float | None, float | None]:
    """The (1-c)/2 and (1+c)/2 order statistics, taken as sacrebleu does (index n//40 for 95%)."""
    if not scores:
        return None, None
    ordered = sorted(scores)
    lower = int(len(ordered) * (1 - confidence) / 2)
    return float(ordered[lower]), float(ordered[len(ordered) - lower - 1])


def bootstrap_interval(stats: MetricStats, samples: int, seed: int = 0, confidence: float = CONFIDENCE) -> Interval:
    low, high = percentile_bounds(bootstrap_scores(stats, samples, seed), confidence)
    return Interval(value=stats.value(), low=low, high=high, n=stats.n, samples=samples, confidence=confidence)


def intervals_overlap(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool | None:
    """Whether two intervals (dicts with low/high) overlap; None when either is missing."""
    if not a or not b or a.get("low") is None or b.get("low") is None:
        return None
    return bool(a["low"] <= b["high"] and b["low"] <= a["high"])
