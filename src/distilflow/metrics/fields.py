"""Field-level scores of structured answers (JSON objects): each object is a set of (field path, value) pairs, its
leaves, so that a prediction is scored field by field against its reference like entity extraction is scored:
precision (the share of the fields it states that are right), recall (the share of the reference's fields it
states rightly), F1, exact match of the whole object, and the accuracy of each field on its own.

Values are compared after light normalisation (strings case- and space-insensitive, 1 == 1.0, lists as a whole);
a field whose value is null counts as absent (it claims nothing). As per-example sufficient statistics, so every
score gets a bootstrap interval like any other metric (metrics/intervals.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from distilflow.metrics.text import MetricStats, mean_stats

Leaf = tuple[str, Any]  # (dotted field path, normalised value)


def normalised(value: Any) -> Any:
    """A value in a form where equal meanings compare equal (hashable)."""
    if isinstance(value, bool):
        return ("bool", value)  # True must not equal 1
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    if isinstance(value, Mapping):
        return tuple(sorted(leaves(value).items()))
    if isinstance(value, Sequence):
        return tuple(normalised(v) for v in value)
    return value


def leaves(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Field path -> normalised value for every leaf of an object (nested objects give dotted paths; lists and
    their items are one value; null is absent)."""
    found: dict[str, Any] = {}
    for key, value in obj.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found.update(leaves(value, f"{path}."))
        elif value is not None:
            found[path] = normalised(value)
    return found


def schema_fields(schema: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The leaf field paths a JSON schema declares (objects' `properties`, recursively), in its order."""
    fields: list[str] = []
    for key, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, Mapping) and sub.get("properties"):
            fields += schema_fields(sub, f"{prefix}{key}.")
        else:
            fields.append(f"{prefix}{key}")
    return fields


def _micro(kind: str):
    def score(sums: Sequence[float]) -> float:
        tp, predicted, expected = sums[0], sums[1], sums[2]
        if kind == "precision":
            return tp / predicted if predicted else 0.0
        if kind == "recall":
            return tp / expected if expected else 0.0
        return 2 * tp / (predicted + expected) if predicted + expected else 1.0
    return score


def field_stats(predictions: Sequence[Mapping[str, Any] | None], references: Sequence[Mapping[str, Any]],
                fields: Sequence[str]) -> dict[str, MetricStats]:
    """exact_match, field_precision / field_recall / field_f1 (micro-averaged over every field of every example)
    and `field_accuracy.PATH` for each of `fields`. A prediction of None (no valid object) states no field."""
    counts, exact = [], []
    per_field: dict[str, list[float]] = {f: [] for f in fields}
    for prediction, reference in zip(predictions, references):
        mine, theirs = leaves(prediction or {}), leaves(reference)
        right = sum(1 for path, value in mine.items() if theirs.get(path, _ABSENT) == value)
        counts.append([float(right), float(len(mine)), float(len(theirs))])
        exact.append(float(prediction is not None and mine == theirs))
        for path in fields:
            per_field[path].append(float(prediction is not None and mine.get(path) == theirs.get(path)))
    stats = {"exact_match": mean_stats(exact),
             **{f"field_{kind}": MetricStats(counts, _micro(kind)) for kind in ("precision", "recall", "f1")}}
    stats.update({f"field_accuracy.{path}": mean_stats(values) for path, values in per_field.items()})
    return stats


_ABSENT = object()
