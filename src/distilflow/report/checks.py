"""What keeps a report honest: retention on every metric (not only the flattering one), the share of degenerate
answers per model, and warnings at the top when a student's answers are broken whatever its scores say."""

from __future__ import annotations

from typing import Any

from distilflow.metrics.degeneration import CHECKS
from distilflow.report.data_section import data_warnings
from distilflow.report.judged import judge_warnings
from distilflow.report.tables import fmt, model_results, score_cell

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


def further_metrics_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """The task's metrics beyond its headline ones (an extraction task's accuracy per field), metric x model."""
    results = {label: m for label, m in model_results(report).items() if m.evaluated}
    names = sorted({n for m in results.values() for n in m.task_metrics} - set(report["metric_names"]))
    if not names:
        return None
    return ["metric [95% CI]", *results], [[name, *(score_cell(m, name) for m in results.values())] for name in names]


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


# How each check is said in a warning.
_KIND_WORDS = {"empty": "empty", "repetitive": "repetitive", "non_words": "made of non-words",
               "unfinished": "unfinished (cut at max_tokens)", "degenerate": "degenerate in any way"}


def worse_than_teacher(shares: dict[str, float | None], teacher: dict[str, float | None]) -> list[str]:
    """The kinds of degeneration (and "degenerate", any of them) on which a model is clearly worse than the teacher:
    its share exceeds the teacher's own by DEGENERATE_MARGIN or more. Judged kind by kind against the teacher's rate:
    answers cut at max_tokens are no sign of a broken student when the teacher's are cut too, and a student that
    repeats itself where the teacher does not is one even when both are "degenerate" by some other check. Without a
    teacher's figures, against none."""
    found = []
    for kind in (*CHECKS, "degenerate"):
        share, own = shares.get(kind), teacher.get(kind)
        if teacher and own is None:
            continue  # the teacher's rate is unknown (its token counts were not reported): nothing to judge against
        if share is not None and share - (own or 0.0) >= DEGENERATE_MARGIN:
            found.append(kind)
    if found != ["degenerate"] and "degenerate" in found:
        found.remove("degenerate")  # named by its kinds
    return found


def warnings(report: dict[str, Any]) -> list[str]:
    """Sentences for the top of the report: a teacher whose labels are spread far from the labelled rows' (the
    teacher stage's label-bias check: the student learned that bias), students whose answers degenerate clearly
    more than the teacher's (on any kind of degeneration), and judges whose controls failed."""
    balance = (report.get("teacher_stage") or {}).get("label_balance") or {}
    found = [balance["warning"]] if balance.get("biased") and balance.get("warning") else []
    results = model_results(report)
    teacher = results.get("teacher") or results.get(report.get("relative_to") or "")
    reference = (teacher.degeneration or {}) if teacher and teacher.evaluated else {}
    for label, m in results.items():
        if m is teacher or not m.degeneration or not m.evaluated:
            continue
        kinds = worse_than_teacher(m.degeneration, reference)
        if kinds:
            detail = "; ".join(f"{fmt(m.degeneration.get(k), 'pct')} {_KIND_WORDS[k]} against "
                               f"{fmt(reference.get(k), 'pct')} of the teacher's" for k in kinds)
            found.append(f"Warning: the {label} model's answers degenerate where the teacher's do not: {detail}. "
                         f"Its scores overstate it; read its answers below before using it.")
    return data_warnings(report) + found + judge_warnings(report)
