"""Stage 5, report: teacher vs baseline vs distilled, as report.json (every figure), report.md,
report.html (self-contained, with plots) and plots/*.svg. The figures come from data.py, the cells from tables.py."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilflow.io import write_json_atomic, write_text_atomic
from distilflow.report.checks import answer_checks_table, further_metrics_table, retention_table, warnings
from distilflow.report.judged import headline_lines, judged_tables
from distilflow.report.data import build_report
from distilflow.report.data_section import data_lines, labels_table, splits_table
from distilflow.report.tables import fmt, performance_table, quality_table, relative_table, teacher_target_facts
from distilflow.report.teams import team_note, teams_markdown
from distilflow.report.tuning import tuning_markdown
from distilflow.workspace import JobPaths

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext


def _md_text(text: str) -> str:
    """Text from data or a model, as text: HTML-significant characters escaped (an answer like
    `<img src=x onerror=...>` must show, not run, where the Markdown is rendered to HTML)."""
    return escape(text, quote=False)


def _md_code(text: str) -> str:
    return f"`{text}`" if "`" not in text else _md_text(text)  # inside a code span nothing is interpreted


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows])


def _md_measured(report: dict[str, Any], plot_files: dict[str, str]) -> list[str]:
    """Summary, quality, speed and memory, plots and example answers; or the sentence that says why not."""
    if report.get("not_measured"):
        return ["## Quality, speed and memory", "", _md_text(report["not_measured"]), "",
                *(["## Plots", ""] + [f"![{name}]({path})" for name, path in plot_files.items()] + [""]
                  if plot_files else [])]
    lines: list[str] = [f"> **{_md_text(w)}**" for w in warnings(report)] + ([""] if warnings(report) else [])
    summary = headline_lines(report)
    if summary:
        lines += ["## Summary", ""] + [f"- {k}: **{_md_text(v)}**" for k, v in summary] + [""]
    relative = relative_table(report)
    if relative:
        lines += [f"## Compared with {_md_text(report['relative_to'])}", "", *_md_table(*relative), ""]
    lines += ["## Quality", "", *_md_table(*quality_table(report)), ""]
    for title, table in (("Retention on every metric", retention_table(report)),
                         ("More metrics", further_metrics_table(report)),
                         ("Answer checks (share of answers)", answer_checks_table(report))):
        if table:
            lines += [f"## {title}", "", *_md_table(*table), ""]
    judged = judged_tables(report)
    if judged:
        lines += ["## Judged", ""]
        for title, header, rows in judged:
            lines += [f"### {_md_text(title)}", "", *_md_table(header, rows), ""]
    lines += ["## Speed and memory", "", *_md_table(*performance_table(report)), ""]
    if plot_files:
        lines += ["## Plots", ""] + [f"![{name}]({path})" for name, path in plot_files.items()] + [""]
    if report.get("examples"):
        labels = report["labels"]
        rows = [[e["input"][:200], e["reference"][:200], *[(e["answers"].get(l) or "(not evaluated)")[:200]
                                                          for l in labels]] for e in report["examples"]]
        lines += ["## Example answers", "", *_md_table(["input", "reference", *labels], rows), ""]
    return lines


def _md_data(data: dict[str, Any]) -> list[str]:
    if not data:
        return []
    lines = ["## Data", ""]
    for table in (splits_table(data), labels_table(data)):
        if table:
            lines += [*_md_table(*table), ""]
    lines += [f"- {_md_text(line.strip())}" for line in data_lines(data)]
    return [*lines, ""]


def _md_teacher_stage(stage: dict[str, Any]) -> list[str]:
    if not stage:
        return []
    reasons = stage.get("rejected_by_reason") or {}
    lines = ["## Teacher data", "",
             f"- Requests: {stage.get('requests', 'n/a')}, failed: {stage.get('failed', 0)}",
             f"- Accepted rows: {json.dumps(stage.get('accepted', {}))}; rejected answers: {stage.get('rejected', 0)}",
             f"- Tokens in/out: {stage.get('prompt_tokens', 'n/a')}/{stage.get('completion_tokens', 'n/a')}"]
    if stage.get("cost_usd") is not None:
        lines.append(f"- Teacher cost: ${stage['cost_usd']:.4f}")
    by_endpoint = (stage.get("this_run") or {}).get("answers_by_endpoint") or {}
    if by_endpoint:
        lines.append("- Answers per endpoint (this run): " + ", ".join(f"{_md_code(url)} {count}"
                                                                      for url, count in by_endpoint.items()))
    lines += [f"- Rejected for {_md_code(reason)}: {count}" for reason, count in sorted(reasons.items(),
                                                                                      key=lambda kv: -kv[1])]
    return lines + [""]


def _md_stage_times(report: dict[str, Any]) -> list[str]:
    """Where the job's time went: each stage's last run (the report stage itself is still running)."""
    seconds = report.get("stage_seconds") or {}
    if not seconds:
        return []
    rows = [[stage, fmt(value, "duration")] for stage, value in seconds.items()]
    return ["## Time per stage", "", *_md_table(["stage", "took (last run)"], rows),
            "", f"Total before this report: {fmt(sum(seconds.values()), 'duration')}.", ""]


def render_markdown(report: dict[str, Any], plot_files: dict[str, str] | None = None) -> str:
    title = f"Distillation report: {report['job']}" if report.get("job") else report.get("title", "Model comparison")
    lines = [f"# {_md_text(title)}", ""]
    if report.get("teacher"):
        teacher = report["teacher"]
        lines += [f"Task: **{report['task_type']}**. Teacher: {_md_code(teacher['model'])} "
                  f"({teacher['backend']}){team_note(teacher)}. Student: {_md_code(report['student']['model'])}.", ""]
    lines += _md_measured(report, plot_files or {})
    lines += _md_data(report.get("data") or {})
    lines += _md_teacher_stage(report.get("teacher_stage") or {})
    lines += teams_markdown(report)
    train = report.get("training") or {}
    if train.get("method"):
        lines += ["## Training", "", f"- Method: {train.get('method')}, steps: {train.get('steps')}, final train loss: "
                  f"{fmt(train.get('train_loss'))}, validation loss: {fmt(train.get('validation_loss'))}", ""]
        if train.get("teacher_requests") is not None:  # on_policy with a served teacher: these calls cost money
            lines.insert(-1, f"- Teacher scoring during training: {train['teacher_requests']} requests, "
                             f"{train.get('teacher_prompt_tokens', 0)} prompt tokens")
        for name, value in teacher_target_facts(train):
            lines.insert(-1, f"- Teacher targets, {name}: {value}")
    lines += tuning_markdown(report.get("tuning") or {})
    lines += _md_stage_times(report)
    lines += ["## How this was measured", ""] + [f"- {_md_text(n)}" for n in report.get("notes", [])] + [""]
    return "\n".join(lines)


def write_report_files(report: dict[str, Any], folder: Path) -> dict[str, Path]:
    """report.json, report.md, report.html and plots/*.svg into `folder` (a job's, or a comparison's run folder:
    the same file names, spelled by JobPaths)."""
    from distilflow.report.html import render_html
    from distilflow.report.plots import all_plots

    plots = all_plots(report)
    plot_files = {}
    for name, svg in plots.items():
        path = folder / "plots" / f"{name}.svg"
        write_text_atomic(path, svg)
        plot_files[name] = f"plots/{name}.svg"
    files = JobPaths(folder)
    paths = {"json": files.report_json, "md": files.report_md, "html": files.report_html}
    write_json_atomic(paths["json"], report)
    write_text_atomic(paths["md"], render_markdown(report, plot_files))
    write_text_atomic(paths["html"], render_html(report, plots))
    return paths


def report_stage(ctx: "StageContext") -> dict[str, Any]:
    report = build_report(ctx)
    paths = write_report_files(report, ctx.paths.root)
    headline = {k: v for k, v in report["comparison"].items() if v is not None and not isinstance(v, dict)}
    return {"report": str(paths["md"]), "report_html": str(paths["html"]), **headline}
