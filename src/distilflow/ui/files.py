"""What a job page reads from the job's folder (workspace.py names every file): rejected teacher rows a page at a
time, a sample of the synthetic data, the report's figures and the spec. Everything read here is shown as text:
the templates escape it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from distilflow.io import iter_jsonl, read_json
from distilflow.report.data import reference_text
from distilflow.report.tables import performance_table, quality_table, summary_lines
from distilflow.report.tuning import trials_table, tuning_facts
from distilflow.secrets import scrub
from distilflow.workspace import JobPaths

PAGE_SIZE = 20
SAMPLE_SIZE = 8


@dataclass(frozen=True)
class DataRow:
    """One teacher answer as shown: the input the student reads, the answer, and why it was rejected (if it was)."""

    id: str
    split: str
    input: str
    answer: str
    reference: str
    reason: str = ""


@dataclass(frozen=True)
class Page:
    rows: list[DataRow]
    number: int  # from 1
    pages: int
    total: int


def _input_text(messages: list[dict[str, Any]]) -> str:
    return "\n\n".join(str(m.get("content", "")) for m in messages if m.get("role") != "assistant")


def _row(raw: dict[str, Any], split: str = "") -> DataRow:
    messages = raw.get("messages") or []
    answer = raw.get("answer")
    if answer is None and messages and messages[-1].get("role") == "assistant":
        answer, messages = messages[-1].get("content", ""), messages[:-1]
    return DataRow(id=str(raw.get("id", "")), split=str(raw.get("split", split)), input=_input_text(messages),
                   answer=str(answer or ""), reference=reference_text(raw.get("reference")),
                   reason=str(raw.get("reason", "")))


def rejected_page(paths: JobPaths, number: int, size: int = PAGE_SIZE) -> Page:
    """Page `number` (from 1) of the rejected teacher rows, read as a stream (the file can be large)."""
    number = max(1, number)
    first, rows, total = (number - 1) * size, [], 0
    for raw in iter_jsonl(paths.rejected):
        if first <= total < first + size:
            rows.append(_row(raw))
        total += 1
    return Page(rows=rows, number=number, pages=max(1, -(-total // size)), total=total)


def synthetic_sample(paths: JobPaths, size: int = SAMPLE_SIZE) -> list[DataRow]:
    """The first accepted teacher rows of the training split."""
    rows = []
    for raw in iter_jsonl(paths.synthetic_split("train")):
        rows.append(_row(raw, "train"))
        if len(rows) >= size:
            break
    return rows


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class ReportView:
    """The report's figures as report.md shows them (report/tables.py makes both)."""

    summary: list[tuple[str, str]]
    quality: Table
    performance: Table
    notes: list[str]
    has_html: bool


def report_view(paths: JobPaths) -> ReportView | None:
    report = read_json(paths.report_json, default=None)
    if not report or not report.get("models"):
        return None
    return ReportView(summary=summary_lines(report), quality=Table(*quality_table(report)),
                      performance=Table(*performance_table(report)), notes=list(report.get("notes") or []),
                      has_html=paths.report_html.exists())


@dataclass(frozen=True)
class TuningView:
    facts: list[tuple[str, str]]
    trials: Table
    scores: list[tuple[int, float]]  # (trial, validation score) of the trials that have one


def tuning_view(paths: JobPaths) -> TuningView | None:
    summary = read_json(paths.tune_summary, default=None)
    if not summary or not summary.get("best"):
        return None
    scores = [(t["number"], t["value"]) for t in summary.get("trials") or [] if t.get("value") is not None]
    return TuningView(facts=tuning_facts(summary), trials=Table(*trials_table(summary)), scores=scores)


def spec_text(spec: dict[str, Any]) -> str:
    """The resolved spec as YAML. The store holds no secrets by construction (keys are named, never given);
    scrubbed once more in case a value slipped through."""
    return scrub(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
