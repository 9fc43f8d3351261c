"""Figures of judged answers: shares of outcomes (win / tie / loss) and ratios of mean scores (judged retention) with
percentile-bootstrap intervals over the test inputs, and Cohen's kappa between two judges.

Cohen's kappa is the few lines of its definition (observed agreement against the agreement expected from each
judge's own label frequencies), written out here because scikit-learn, which has it, is not a dependency.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

from distilflow.metrics.intervals import bootstrap_interval
from distilflow.metrics.text import MetricStats, mean_stats


def share_intervals(outcomes: Sequence[str], kinds: Sequence[str], samples: int, seed: int) -> dict[str, Any]:
    """Each kind's share of `outcomes` ({"win": 0.25, ...}) and its 95% interval ({"win": {value, low, high, n}})."""
    shares, intervals = {}, {}
    for kind in kinds:
        interval = bootstrap_interval(mean_stats([float(o == kind) for o in outcomes]), samples, seed).as_dict()
        shares[kind], intervals[kind] = interval["value"], interval
    return {**shares, "intervals": intervals, "n": len(outcomes)}


def mean_interval(values: Sequence[float], samples: int, seed: int) -> dict[str, Any]:
    """The mean of `values` with its 95% interval: {value, low, high, n, ...}."""
    return bootstrap_interval(mean_stats(values), samples, seed).as_dict()


def _ratio_of_sums(sums: Sequence[float]) -> float:
    return sums[0] / sums[1] if sums[1] else 0.0


def ratio_interval(pairs: Sequence[tuple[float, float]], samples: int, seed: int) -> dict[str, Any]:
    """mean(first) / mean(second) over paired values (a student's and the teacher's score of the same input), with
    its 95% interval: the pairs are resampled together, so the interval is that of the ratio itself."""
    stats = MetricStats([[float(a), float(b)] for a, b in pairs], _ratio_of_sums)
    return bootstrap_interval(stats, samples, seed).as_dict()


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two judges' labels of the same items (None without items; 1.0 when both always give the one
    same label, where agreement by chance is total and kappa is otherwise undefined)."""
    n = len(first)
    if n == 0 or n != len(second):
        return None
    observed = sum(a == b for a, b in zip(first, second)) / n
    count_a, count_b = Counter(first), Counter(second)
    expected = sum(count_a[label] * count_b[label] for label in count_a) / (n * n)
    if expected >= 1.0:
        return 1.0 if observed >= 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)
