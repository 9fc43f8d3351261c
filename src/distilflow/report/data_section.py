"""The report's data section: per split the rows given, written and used, how they spread over the labels, how
long and how varied the inputs are, the teacher answers rejected by reason, and the overlap of training rows with
held-out rows and what was done. Built from prepare's data checks (this run's) and the teacher stage's metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distilflow.report.tables import fmt

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext

Table = tuple[list[str], list[list[str]]]


def data_section(ctx: StageContext) -> dict[str, Any]:
    """report.json's `data`: prepare's figures, with the teacher stage's written inputs and rejected answers."""
    data = dict(ctx.inputs.summary()["data"])
    generate = ctx.stage_metrics("generate") or {}
    if generate.get("written_inputs"):  # inputs the teacher wrote (inputs:), when the job asked for them
        data["written"] = generate["written_inputs"]
    data["rejected_by_reason"] = dict(generate.get("rejected_by_reason") or {})
    data["accepted"] = dict(generate.get("accepted") or {})
    return data


def data_warnings(report: dict[str, Any]) -> list[str]:
    """A sentence for the top of the report when training rows that repeat held-out rows were kept."""
    overlap = (report.get("data") or {}).get("overlap") or {}
    if overlap.get("training_rows") and overlap.get("action") == "warn":
        return [(f"Warning: {overlap['training_rows']} training rows near-duplicate validation or test rows and were "
                 f"kept (data.overlap: warn): the held-out figures below are measured partly on trained-on inputs.")]
    return []


def _lengths(profile: dict[str, Any]) -> str:
    n = profile.get("length_chars") or {}
    return " / ".join(fmt(n.get(k), "int") for k in ("min", "median", "p95", "max")) if n else "-"


def splits_table(data: dict[str, Any]) -> Table | None:
    splits = data.get("splits") or {}
    if not splits:
        return None
    written = data.get("written") or {}
    header = ["split", "rows given", "written by the teacher", "used", "teacher answers kept",
              "input length, chars (min / median / p95 / max)", "distinct-1 / distinct-2"]
    rows = []
    for split, profile in splits.items():
        wrote = f"{written.get('kept', 0):,} of {written.get('requested', 0):,}" if split == "train" and written else "-"
        kept = data.get("accepted", {}).get(split)
        rows.append([split, fmt((data.get("given") or {}).get(split), "int"), wrote, fmt(profile.get("rows"), "int"),
                     fmt(kept, "int") if kept is not None else "-", _lengths(profile),
                     f"{fmt(profile.get('distinct_1'))} / {fmt(profile.get('distinct_2'))}"])
    return header, rows


def labels_table(data: dict[str, Any]) -> Table | None:
    """Rows per label and split (tasks of fixed answers); the written inputs' labels as a column of their own."""
    splits = {s: p for s, p in (data.get("splits") or {}).items() if "by_label" in p}
    if not splits:
        return None
    labels = list(next(iter(splits.values()))["by_label"])
    written = (data.get("written") or {}).get("by_label") or {}
    header = ["label", *splits, *(["written"] if written else [])]
    rows = [[label, *[fmt(p["by_label"].get(label, 0), "int") for p in splits.values()],
             *([fmt(written.get(label, 0), "int")] if written else [])] for label in labels]
    unlabelled = [p.get("unlabelled", 0) for p in splits.values()]
    if any(unlabelled):
        rows.append(["(no label)", *[fmt(n, "int") for n in unlabelled], *(["-"] if written else [])])
    return header, rows


def data_lines(data: dict[str, Any]) -> list[str]:
    """The sentences of the section: overlap found and what was done, rejected answers and written rows dropped."""
    lines = []
    overlap = data.get("overlap") or {}
    count = overlap.get("training_rows", 0)
    if count:
        splits = " and ".join(f"{n} {split}" for split, n in (overlap.get("by_split") or {}).items())
        done = {"drop": "they were dropped from training", "warn": "they were kept in training (data.overlap: warn)",
                "fail": "the job stopped"}.get(overlap.get("action", ""), "")
        lines.append(f"Overlap: {count} overlapping training rows (near-duplicates of held-out rows: {splits}; "
                     f"character 5-gram similarity of at least {overlap.get('threshold')}); {done}.")
        lines += [f"  {e['training']} ~ {e['held_out']} ({e['similarity']}): {e['text']!r}"
                  for e in overlap.get("examples", [])]
    elif overlap:
        lines.append(f"Overlap: no training row near-duplicates a validation or test row (similarity of at least "
                     f"{overlap.get('threshold')}).")
    rejected = data.get("rejected_by_reason") or {}
    if rejected:
        lines.append("Teacher answers rejected: " + ", ".join(f"{reason} {n:,}" for reason, n in
                                                          sorted(rejected.items(), key=lambda kv: -kv[1])) + ".")
    dropped = (data.get("written") or {}).get("dropped") or {}
    if dropped:
        lines.append("Written inputs dropped: " + ", ".join(f"{reason} {n:,}" for reason, n in dropped.items()) + ".")
    return lines
