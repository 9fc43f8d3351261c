"""The teachers section of the report (several teachers, generation.combine): each teacher's quality against the
references of the training and validation inputs, its share of the kept answers, its cost, and the agreement
matrix. Shared by report.md and report.html."""

from __future__ import annotations

from typing import Any

from distilflow.report.tables import fmt
from distilflow.report.tuning import markdown_table


def team_note(teacher: dict[str, Any]) -> str:
    """After the teacher's name in the report's first line: the other teachers and how they were combined."""
    team = teacher.get("team")
    if not team:
        return ""
    return f" (the first of {len(team)} teachers: {', '.join(team)}; combined by {teacher.get('combine')})"


def teachers_table(stage: dict[str, Any], test: dict[str, Any] | None = None,
                   metric: str = "score") -> tuple[list[str], list[list[str]]] | None:
    """One row per teacher; `test`: each one's primary metric on the test set (when evaluated)."""
    teachers = stage.get("teachers") or {}
    if not teachers:
        return None
    test = test or {}
    header = ["teacher", "model", "asked", "failed", "agrees with reference", f"test {metric}", "kept",
              "share of kept", "tokens in / out", "cost (USD)"]
    rows = []
    for name, t in teachers.items():
        quality = t.get("reference_agreement") or {}
        agrees = f"{fmt(quality.get('rate'), 'pct')} (n={quality.get('n')})" if quality else "n/a"
        rows.append([name, str(t.get("model")), fmt(t.get("asked")), fmt(t.get("failed")), agrees,
                     fmt(test.get(name)), fmt(t.get("kept")),
                     fmt(t.get("kept_share"), "pct"),
                     f"{fmt(t.get('prompt_tokens'), 'int')} / {fmt(t.get('completion_tokens'), 'int')}",
                     fmt(t.get("cost_usd"))])
    return header, rows


def agreement_table(stage: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """Teacher x teacher: the share of common inputs on which they agree (chrF/100 for free text), and n."""
    matrix = stage.get("agreement_matrix") or {}
    names = list(matrix)
    if len(names) < 2:
        return None
    rows = [[a, *["-" if a == b else (f"{fmt(matrix[a][b]['agreement'], 'pct')} (n={matrix[a][b]['n']})"
                                      if b in matrix[a] else "n/a") for b in names]] for a in names]
    return ["", *names], rows


def teams_markdown(report: dict[str, Any]) -> list[str]:
    stage = report.get("teacher_stage") or {}
    table = teachers_table(stage, report.get("teacher_test_scores"), report.get("primary_metric", "score"))
    if table is None:
        return []
    lines = ["## Teachers", "", f"Combined by `{stage.get('combine')}`.", "", *markdown_table(*table)]
    agreement = agreement_table(stage)
    if agreement is not None:
        lines += ["### Agreement between teachers", "", *markdown_table(*agreement)]
    return lines
