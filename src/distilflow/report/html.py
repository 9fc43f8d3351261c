"""report.html: one self-contained file (inline CSS, plots as inline SVG, no scripts, nothing fetched),
so it can be mailed, archived or opened offline. Every piece of text from data or models is escaped."""

from __future__ import annotations

from html import escape
from typing import Any

from distilflow.report.checks import answer_checks_table, further_metrics_table, retention_table, warnings
from distilflow.report.data_section import data_lines, labels_table, splits_table
from distilflow.report.judged import headline_lines, judged_tables
from distilflow.report.tables import fmt, performance_table, quality_table, relative_table, teacher_target_facts
from distilflow.report.teams import agreement_table, team_note, teachers_table
from distilflow.report.tuning import trials_table, tuning_facts

MAX_ANSWER_CHARS = 1200

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1d1d1f;
       background: #fafafa; }
main { max-width: 1200px; margin: 0 auto; padding: 24px; }
h1 { margin: 0 0 4px; font-size: 26px; }
h2 { margin-top: 32px; border-bottom: 1px solid #ddd; padding-bottom: 4px; font-size: 20px; }
.lead { color: #555; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: #fff; border: 1px solid #e2e2e2; border-radius: 8px; padding: 10px 14px; min-width: 200px;
        flex: 1 1 200px; }
.card .k { font-size: 12px; color: #666; }
.card .v { font-size: 18px; font-weight: 600; margin-top: 4px; }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: 14px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f3; }
td.text { white-space: pre-wrap; word-break: break-word; max-width: 320px; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
figure { background: #fff; border: 1px solid #e2e2e2; border-radius: 8px; margin: 0; padding: 8px; }
figure svg { max-width: 100%; height: auto; display: block; }
figcaption { font-size: 13px; color: #555; margin-top: 4px; }
.notes li { margin-bottom: 4px; color: #444; }
.warning { background: #fff3cd; border: 1px solid #e0b000; border-radius: 8px; padding: 10px 14px; font-weight: 600; }
"""

CAPTIONS = {
    "scores": "Task score per model; error bars are 95% bootstrap intervals.",
    "latency": "Latency per answer at batch size 1 (mean, p50, p95) and time to first token, in milliseconds.",
    "memory": "Peak memory and the memory the model added, and parameter count, per model.",
    "loss": "Student training loss (and validation loss) by optimizer step.",
    "confusion": "Classification: for each reference label (rows), the share of its inputs answered with each "
                 "label (columns), per model.",
    "balance": "Rows per label in each split (written: inputs the teacher wrote), as the data checks counted them.",
    "tuning": "distilflow tune: each trial's validation score against each setting it tried (the chosen trial in "
              "orange; pruned trials hollow, at the score they were stopped at).",
}


def _table(header: list[str], rows: list[list[str]], css_id: str, text_columns: tuple[int, ...] = ()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(f'<td class="text">{escape(c)}</td>' if i in text_columns else f"<td>{escape(c)}</td>"
                        for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f'<table id="{css_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _clip(text: str | None) -> str:
    if text is None:
        return "(not evaluated)"
    if not text.strip():
        return f"(blank answer: {len(text)} whitespace characters)"
    return text if len(text) <= MAX_ANSWER_CHARS else text[:MAX_ANSWER_CHARS] + " …"


def _data(data: dict[str, Any]) -> str:
    if not data:
        return ""
    parts = ['<h2 id="data">Data</h2>']
    for css_id, table in (("data-splits", splits_table(data)), ("data-labels", labels_table(data))):
        if table:
            parts.append(_table(*table, css_id))
    items = "".join(f"<li>{escape(line.strip())}</li>" for line in data_lines(data))
    return "".join(parts) + (f'<ul class="notes" id="data-checks">{items}</ul>' if items else "")


def _teacher_stage(stage: dict[str, Any]) -> str:
    if not stage:
        return ""
    accepted = stage.get("accepted") or {}
    facts = [("requests", fmt(stage.get("requests"))), ("failed requests", fmt(stage.get("failed", 0))),
             *[(f"accepted ({split})", fmt(n)) for split, n in accepted.items()],
             ("rejected answers", fmt(stage.get("rejected", 0))),
             ("tokens in / out", f"{fmt(stage.get('prompt_tokens'))} / {fmt(stage.get('completion_tokens'))}")]
    if stage.get("cost_usd") is not None:
        facts.append(("teacher cost (USD)", fmt(stage.get("cost_usd"))))
    reasons = stage.get("rejected_by_reason") or {}
    parts = ["<h2>Teacher data</h2>", _table(["", "count"], [[k, v] for k, v in facts], "teacher-stage")]
    parts.append("<h3>Rejected teacher answers by reason</h3>")
    if reasons:
        rows = [[reason, fmt(count)] for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1])]
        parts.append(_table(["reason", "rejected"], rows, "rejections"))
    else:
        parts.append("<p>No teacher answer was rejected.</p>")
    return "\n".join(parts)


def _training(train: dict[str, Any]) -> str:
    if not train:
        return ""
    facts = [("method", fmt(train.get("method"))), ("optimizer steps", fmt(train.get("steps"))),
             ("training rows", fmt(train.get("train_rows"))), ("final training loss", fmt(train.get("train_loss"))),
             ("validation loss", fmt(train.get("validation_loss")))]
    if train.get("teacher_requests") is not None:  # on_policy with a served teacher: these calls cost money
        facts.append(("teacher scoring requests / prompt tokens",
                      f"{fmt(train['teacher_requests'])} / {fmt(train.get('teacher_prompt_tokens'))}"))
    facts += [(f"teacher targets, {name}", value) for name, value in teacher_target_facts(train)]
    return "<h2>Training</h2>" + _table(["", ""], [[k, v] for k, v in facts], "training")


def _teachers(report: dict[str, Any]) -> str:
    """Several teachers: each one's quality, share of the kept answers and cost; their agreement matrix."""
    stage = report.get("teacher_stage") or {}
    table = teachers_table(stage, report.get("teacher_test_scores"), report.get("primary_metric", "score"))
    if table is None:
        return ""
    parts = [f"<h2>Teachers</h2><p>Combined by {escape(str(stage.get('combine')))}.</p>", _table(*table, "teachers")]
    agreement = agreement_table(stage)
    if agreement is not None:
        parts.append("<h3>Agreement between teachers</h3>" + _table(*agreement, "teacher-agreement"))
    return "\n".join(parts)


def _tuning(summary: dict[str, Any]) -> str:
    """distilflow tune: the chosen settings and scores, and every trial's settings against its validation score."""
    if not summary:
        return ""
    facts = _table(["", ""], [[k, v] for k, v in tuning_facts(summary)], "tuning")
    return "<h2>Tuning</h2>" + facts + _table(*trials_table(summary), "trials")


def _plots(plots: dict[str, str]) -> list[str]:
    if not plots:
        return []
    figures = "".join(f'<figure id="plot-{escape(name)}">{svg}<figcaption>{escape(CAPTIONS.get(name, name))}'
                      f"</figcaption></figure>" for name, svg in plots.items())
    return [f'<h2>Plots</h2><div class="plots">{figures}</div>']


def _measured(report: dict[str, Any], plots: dict[str, str]) -> list[str]:
    """Summary, quality, speed and memory, plots and example answers; or the sentence that says why not."""
    if report.get("not_measured"):
        return [f'<h2>Quality, speed and memory</h2><p id="not-measured">{escape(report["not_measured"])}</p>',
                *_plots(plots)]
    parts = [f'<p class="warning">{escape(w)}</p>' for w in warnings(report)]
    summary = headline_lines(report)
    if summary:
        cards = "".join(f'<div class="card"><div class="k">{escape(k)}</div><div class="v">{escape(v)}</div></div>'
                        for k, v in summary)
        parts.append(f'<h2>Summary</h2><div class="cards" id="summary">{cards}</div>')
    relative = relative_table(report)
    if relative:
        parts.append(f"<h2>Compared with {escape(report['relative_to'])}</h2>" + _table(*relative, "relative"))
    parts.append("<h2>Quality</h2>" + _table(*quality_table(report), "quality"))
    for title, css_id, table in (("Retention on every metric", "retention", retention_table(report)),
                                 ("More metrics", "more-metrics", further_metrics_table(report)),
                                 ("Answer checks (share of answers)", "answer-checks", answer_checks_table(report))):
        if table:
            parts.append(f"<h2>{title}</h2>" + _table(*table, css_id))
    judged = judged_tables(report)
    if judged:
        parts.append('<h2 id="judged">Judged</h2>' + "".join(
            f"<h3>{escape(title)}</h3>" + _table(header, rows, f"judged-{i}", (0, 2, 4) if header[0] == "input" else ())
            for i, (title, header, rows) in enumerate(judged)))
    parts.append("<h2>Speed and memory</h2>" + _table(*performance_table(report), "performance"))
    parts += _plots(plots)
    if report.get("examples"):
        labels = report["labels"]
        rows = [[e["input"], e["reference"], *[_clip(e["answers"].get(l)) for l in labels]] for e in report["examples"]]
        parts.append("<h2>Example answers</h2>"
                     + _table(["input", "reference", *labels], rows, "examples", tuple(range(2 + len(labels)))))
    return parts


def render_html(report: dict[str, Any], plots: dict[str, str]) -> str:
    title = f"Distillation report: {report['job']}" if report.get("job") else report.get("title", "Model comparison")
    lead = f"Task: {report['task_type']}."
    if report.get("teacher"):
        teacher = report["teacher"]
        lead += (f" Teacher: {teacher['model']} ({teacher['backend']}){team_note(teacher)}."
                 f" Student: {report['student']['model']}.")
    parts = [f"<h1>{escape(title)}</h1>", f'<p class="lead">{escape(lead)} Created {escape(report["created_at"])}.</p>']
    parts += _measured(report, plots)
    parts.append(_data(report.get("data") or {}))
    parts.append(_teacher_stage(report.get("teacher_stage") or {}))
    parts.append(_teachers(report))
    parts.append(_training(report.get("training") or {}))
    parts.append(_tuning(report.get("tuning") or {}))
    notes = "".join(f"<li>{escape(n)}</li>" for n in report.get("notes", []))
    parts.append(f'<h2>How this was measured</h2><ul class="notes">{notes}</ul>')
    body = "\n".join(p for p in parts if p)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{escape(title)}</title>\n'
            f"<style>{_CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n")
