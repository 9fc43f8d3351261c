"""Calibration of a ranking teacher's label scores (`generation.calibration`): a few-shot prompt makes a small model
favour some labels whatever the input (the label of the last shots, a label that starts with a common word), and
the student learns that bias faithfully. Both methods here multiply each label's probability by a per-label weight
that does not depend on the input, then renormalise over the labels; the weights are stored as log-offsets, so
the same correction applies to the teacher's answers, to the soft targets sparse_kd trains on, and to the teacher's
evaluation.

- content_free (Zhao et al. 2021, "Calibrate Before Use"): the weights are 1 / the teacher's mean label
  distribution for inputs that carry no content ("N/A", "", "[MASK]") under the same prompt.
- prior: the weights are (the label shares of the labelled training rows) / (the teacher's mean label
  distribution over the inputs it answers): its average belief is moved onto the labelled rows' shares.

The mass the teacher gave to tokens that start no label is kept as it was: calibration only moves probability
between the labels. Written by hand: a dozen lines of arithmetic, no library does it for stored log-probs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

# The content-free inputs of Zhao et al. 2021 (their Table: "N/A", the empty string and "[MASK]", averaged).
CONTENT_FREE_INPUTS = ("N/A", "", "[MASK]")


def label_distribution(logprobs: Sequence[float]) -> list[float]:
    """Label log-probabilities (of the full vocabulary) as a distribution over the labels alone."""
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    return [w / total for w in weights]


def mean_distribution(rows: Iterable[Sequence[float]]) -> list[float]:
    """The mean over `rows` (label log-probabilities each) of their label distributions."""
    distributions = [label_distribution(row) for row in rows]
    if not distributions:
        raise ValueError("no label scores to average")
    return [sum(column) / len(distributions) for column in zip(*distributions)]


def content_free_offsets(content_free: Sequence[Sequence[float]]) -> list[float]:
    """Per-label log-offsets from the teacher's label scores for the content-free inputs: -log of their mean
    label distribution (a label the teacher favours on an empty message is pushed down by as much)."""
    return [-math.log(max(p, 1e-12)) for p in mean_distribution(content_free)]


def labelled_shares(labels: Sequence[str], references: Iterable[str | None]) -> list[float]:
    """Each label's share among the labelled rows, add-one smoothed (a label no row shows is rare, not
    impossible: its weight must not be zero)."""
    counts = Counter(r for r in references if r is not None)
    total = sum(counts[label] for label in labels) + len(labels)
    return [(counts[label] + 1) / total for label in labels]


def prior_offsets(answered: Iterable[Sequence[float]], shares: Sequence[float]) -> list[float]:
    """Per-label log-offsets that move the teacher's mean label distribution over `answered` (label scores of the
    inputs it labels) onto `shares` (the labelled rows'): log share - log mean."""
    mean = mean_distribution(answered)
    return [math.log(s) - math.log(max(p, 1e-12)) for s, p in zip(shares, mean)]


def calibrate(logprobs: Sequence[float], offsets: Sequence[float]) -> list[float]:
    """One input's label log-probabilities with the offsets added and renormalised over the labels, keeping the
    total mass the labels had (the rest stays with tokens that start no label)."""
    top = max(logprobs)
    mass = math.log(sum(math.exp(lp - top) for lp in logprobs)) + top  # log of the labels' total probability
    shifted = [lp + off for lp, off in zip(logprobs, offsets)]
    top = max(shifted)
    norm = math.log(sum(math.exp(s - top) for s in shifted)) + top
    return [s - norm + mass for s in shifted]


def best_label(logprobs: Sequence[float]) -> int:
    """The index of the highest-scoring label (the first of equals, as ranking picks it)."""
    return max(range(len(logprobs)), key=lambda i: logprobs[i])
