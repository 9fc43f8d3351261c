"""Stage 5, report: teacher vs baseline vs distilled as report.json (every figure), report.md, report.html and
plots. data.py gathers the figures (each model's result read through results.ModelResult), tables.py the cells
that markdown.py and html.py both show, plots.py the SVG plots."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext


def run_report(ctx: "StageContext") -> dict[str, Any]:
    from distilflow.report.markdown import report_stage

    return report_stage(ctx)
