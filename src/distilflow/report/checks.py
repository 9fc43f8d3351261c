"""What keeps a report honest: retention on every metric (not only the flattering one), the share of degenerate
answers per model, and warnings at the top when a student's answers are broken whatever its scores say."""

from __future__ import annotations

from typing import Any

from distilflow.metrics.degeneration import CHECKS
from distilflow.report.tables import fmt, model_results

# A student whose share of degenerate answers exceeds the teacher's by this much gets a warning at the top.
DEGENERATE_MARGIN = 0.15


def retention_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """Per task metric: each model's score, and distilled / teacher and baseline / teacher."""
    results = model_results(report)
    teacher, distilled, baseline = (results.get(label) for label in ("teacher", "distilled", "baseline"))
    if teacher is None or distilled is None or not teacher.evaluated or not distilled.evaluated:
        return None
    header = ["metric", "teacher", "baseline", "distilled", "retention (distilled / teacher)", "baseline / teacher"]
    rows = []
    for name in report["metric_names"]:
        t, d = teacher.score(name), distilled.score(name)
        b = baseline.score(name) if baseline is not None and baseline.evaluated else None
        rows.append([name, fmt(t), fmt(b), fmt(d), fmt(d / t if d is not None and t else None, "pct"),
                     fmt(b / t if b is not None and t else None, "pct")])
    return header, rows


def answer_checks_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """Model x share of answers that are degenerate (any check), empty, repetitive, non-words, unfinished."""
    rows = []
    for label, m in model_results(report).items():
        shares = m.degeneration or {}
        if m.evaluated and shares:
            rows.append([label, *(fmt(shares.get(name), "pct") for name in ("degenerate", *CHECKS))])
    if not rows:
        return None
    return ["model", "degenerate (any)", "empty", "repetitive", "non-words", "unfinished (hit max_tokens)"], rows


def warnings(report: dict[str, Any]) -> list[str]:
    """Sentences for the top of the report: students whose answers degenerate far more than the teacher's."""
    results = model_results(report)
    teacher = results.get("teacher") or results.get(report.get("relative_to") or "")
    reference = (teacher.degeneration or {}).get("degenerate") if teacher and teacher.evaluated else None
    found = []
    for label, m in results.items():
        share = (m.degeneration or {}).get("degenerate")
        if m is teacher or share is None or not m.evaluated:
            continue
        if share - (reference or 0.0) >= DEGENERATE_MARGIN:
            found.append(f"Warning: {fmt(share, 'pct')} of the {label} model's answers are degenerate (empty, "
                         f"repetitive, non-words or unfinished) against {fmt(reference, 'pct')} of the teacher's: "
                         f"its scores overstate it; read its answers below before using it.")
    return found
