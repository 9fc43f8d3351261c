"""The tuning section of the report (distilflow tune): the trials table with each trial's settings and validation
score, the chosen settings, and the test score of the chosen student. Shared by report.md and report.html."""

from __future__ import annotations

from typing import Any

from distilflow.report.tables import fmt


def trials_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per trial: its settings (one column each) against its validation score."""
    trials = summary.get("trials") or []
    names = sorted({name for t in trials for name in t.get("settings", {})})
    header = ["trial", "state", f"validation {summary.get('metric', 'score')}", *names, "steps", "seconds"]
    rows = []
    for t in trials:
        mark = " (chosen)" if t["number"] == summary["best"]["number"] else " (job's settings)" \
            if t.get("job_settings") else ""
        rows.append([f"{t['number']}{mark}", t["state"], fmt(t.get("value")),
                     *[fmt(t["settings"].get(n)) for n in names], fmt(t.get("steps")), fmt(t.get("seconds"))])
    return header, rows


def tuning_facts(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The headline: the chosen trial, its validation score against the job's own settings, its test score."""
    best, metric = summary["best"], summary.get("metric", "score")
    settings = ", ".join(f"{k}={fmt(v)}" for k, v in best["settings"].items())
    counts = summary.get("counts", {})
    facts = [("trials", f"{counts.get('complete', 0)} complete, {counts.get('pruned', 0)} pruned, "
                        f"{counts.get('fail', 0)} failed in {fmt(summary.get('minutes'))} minutes"),
             ("chosen", f"trial {best['number']}: {settings}"),
             (f"validation {metric}", f"{fmt(best['value'])} (the job's own settings: "
                                     f"{fmt(summary.get('job_settings_value'))})")]
    test = summary.get("test") or {}
    facts.append((f"test {metric} of the chosen student", fmt(_test_score(test, metric))))
    facts.append(("settings file", summary.get("best_spec", "best.yaml")))
    return facts


def _test_score(test: dict[str, Any], metric: str) -> Any:
    if metric in test:
        return test[metric]
    return (test.get("task_metrics") or {}).get(metric)


def tuning_markdown(summary: dict[str, Any]) -> list[str]:
    if not summary:
        return []
    header, rows = trials_table(summary)
    return ["## Tuning", "", *[f"- {k}: {v}" for k, v in tuning_facts(summary)], "", *markdown_table(header, rows)]


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows], ""]
