"""The judged section of the report (`evaluation.judge`, figures in report.json's `judge`): win / tie / loss against
the teacher with intervals, rubric means and judged retention, the judge's controls, the judges' agreement, and
examples with the judge's reasons; the headline lines for generative tasks; the warning at the top when the judge's
controls fail. Shared by report.md and report.html (the cells are the same in both)."""

from __future__ import annotations

from typing import Any

from distilflow.report.tables import fmt, summary_lines

Table = tuple[str, list[str], list[list[str]]]  # title, header, rows


def _judges(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    judge = report.get("judge") or {}
    return judge.get("judges") or ({judge["name"]: judge} if judge.get("name") else {})


def _share(figures: dict[str, Any], kind: str) -> str:
    interval = (figures.get("intervals") or {}).get(kind) or {}
    cell = fmt(figures.get(kind), "pct")
    if interval.get("low") is not None:
        cell += f" [{fmt(interval['low'], 'pct')}, {fmt(interval['high'], 'pct')}]"
    return cell


def _interval(value: dict[str, Any] | None, kind: str = "num") -> str:
    if not value or value.get("value", value.get("mean")) is None:
        return "n/a"
    center = value.get("value", value.get("mean"))
    if value.get("low") is None:
        return fmt(center, kind)
    return f"{fmt(center, kind)} [{fmt(value['low'], kind)}, {fmt(value['high'], kind)}]"


def judge_warnings(report: dict[str, Any]) -> list[str]:
    """A sentence for the top of the report for each judge whose controls failed: which, and by how much."""
    found = []
    for name, judge in _judges(report).items():
        controls = judge.get("controls") or {}
        if controls and not controls.get("reliable"):
            found.append(f"Warning: the judge {name} ({judge.get('model')}) is not reliable for this task: "
                         + "; ".join(controls.get("failures") or []) + ". Its verdicts below are not a measurement.")
    return found


def judge_summary_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The judged headline: distilled vs teacher (win / tie / loss) and judged retention, per judge."""
    lines = []
    for name, judge in _judges(report).items():
        doubt = "" if (judge.get("controls") or {}).get("reliable") else " (judge not reliable: see the warning)"
        distilled = (judge.get("models") or {}).get("distilled") or {}
        if "win" in distilled:
            lines.append((f"Judged by {name}, distilled vs teacher (both orders; a tie unless both agree)",
                          f"win {_share(distilled, 'win')} / tie {_share(distilled, 'tie')} / loss "
                          f"{_share(distilled, 'loss')} (n={distilled.get('n')}){doubt}"))
        retention = (judge.get("retention") or {}).get("distilled")
        if retention:
            lines.append((f"Judged retention by {name} (distilled / teacher mean rubric score)",
                          _interval(retention, "pct") + doubt))
    return lines


def headline_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The summary: for a generative task with a judge, the judged figures first; else they follow."""
    judged = judge_summary_lines(report)
    if (report.get("judge") or {}).get("headline"):
        return judged + summary_lines(report)
    return summary_lines(report) + judged


def _pairwise_table(name: str, judge: dict[str, Any]) -> Table | None:
    rows = [[label, _share(f, "win"), _share(f, "tie"), _share(f, "loss"), fmt(f.get("n")), fmt(f.get("unreadable")),
             fmt(f.get("missing"))] for label, f in (judge.get("models") or {}).items() if "win" in f]
    if not rows:
        return None
    return (f"Judged by {name}: each student against the teacher (pairwise, both orders)",
            ["model", "win [95% CI]", "tie [95% CI]", "loss [95% CI]", "n", "unreadable", "no reply"], rows)


def _rubric_table(name: str, judge: dict[str, Any]) -> Table | None:
    retention = judge.get("retention") or {}
    rows = [[label, _interval(f["rubric"]), fmt(f["rubric"].get("n")), fmt(f["rubric"].get("unreadable")),
             _interval(retention.get(label), "pct") if label in retention else "-"]
            for label, f in (judge.get("models") or {}).items() if f.get("rubric")]
    if not rows:
        return None
    return (f"Judged by {name}: rubric scores (1-5)",
            ["model", "mean score [95% CI]", "n", "unreadable", "judged retention (mean / teacher's)"], rows)


def _controls_table(name: str, judge: dict[str, Any]) -> Table | None:
    controls = judge.get("controls") or {}
    if not controls:
        return None
    limits = controls.get("thresholds") or {}
    by_kind = controls.get("corrupted_loss_rate_by_kind") or {}
    rows = [["self vs self: share of verdicts that are tie", fmt(controls.get("self_tie_rate"), "pct"),
             f">= {fmt(limits.get('self_tie_rate_min'), 'pct')}"],
            ["corrupted copy loses (both orders agree)", fmt(controls.get("corrupted_loss_rate"), "pct")
             + "".join(f"; {kind} {fmt(v, 'pct')}" for kind, v in by_kind.items()),
             f">= {fmt(limits.get('corrupted_loss_rate_min'), 'pct')}"],
            ["order flips: verdict changes with the order", fmt(controls.get("order_flip_rate"), "pct"),
             f"<= {fmt(limits.get('order_flip_rate_max'), 'pct')}"],
            ["rubric: corrupted copy scores lower", fmt(controls.get("rubric_corrupted_lower_rate"), "pct"),
             f">= {fmt(limits.get('rubric_corrupted_lower_rate_min'), 'pct')}"],
            ["unreadable replies (after one retry)", fmt(controls.get("unreadable_rate"), "pct"),
             f"<= {fmt(limits.get('unreadable_rate_max'), 'pct')}"],
            ["reliable", fmt(controls.get("reliable"), "yesno"), f"control inputs: {controls.get('n')}"]]
    return f"The controls of judge {name}", ["control", "value", "a reliable judge"], rows


def _examples_table(report: dict[str, Any], name: str, judge: dict[str, Any]) -> Table | None:
    by_id = {e["id"]: e for e in report.get("examples") or []}
    rows = []
    for example in judge.get("examples") or []:
        shown = by_id.get(example["id"], {})
        for label, entry in example["judged"].items():
            orders = entry.get("orders") or []
            verdict = entry.get("outcome") or ""
            if orders:
                verdict += " (" + ", ".join(f"order {o['order'] + 1}: {o['outcome'] or 'unreadable'}" for o in orders) + ")"
            if entry.get("score") is not None:
                verdict += f" score {fmt(entry['score'])}"
            reasons = " | ".join(r for r in [*(o.get("reason") or "" for o in orders), entry.get("score_reason") or ""]
                                 if r)
            rows.append([str(shown.get("input", example["id"]))[:200], label,
                         str((shown.get("answers") or {}).get(label) or "")[:200], verdict.strip(), reasons[:300]])
    if not rows:
        return None
    return f"Judged examples ({name}): verdicts and the judge's reasons", ["input", "model", "answer", "verdict",
                                                                        "reason"], rows


def agreement_table(report: dict[str, Any]) -> Table | None:
    """Several judges: Cohen's kappa of each two of them, on pairwise outcomes and on rubric scores."""
    pairs = (report.get("judge") or {}).get("agreement") or []
    if not pairs:
        return None
    rows = [[" vs ".join(p["judges"]), p["kind"], fmt(p.get("kappa")), fmt(p.get("n"))] for p in pairs]
    return "Agreement between the judges (Cohen's kappa)", ["judges", "on", "kappa", "n"], rows


def judged_tables(report: dict[str, Any]) -> list[Table]:
    """Every table of the judged section, in order."""
    tables: list[Table | None] = []
    for name, judge in _judges(report).items():
        tables += [_pairwise_table(name, judge), _rubric_table(name, judge), _controls_table(name, judge),
                   _usage_table(name, judge), _examples_table(report, name, judge)]
    tables.append(agreement_table(report))
    return [t for t in tables if t is not None]


def _usage_table(name: str, judge: dict[str, Any]) -> Table | None:
    usage = judge.get("usage") or {}
    if not usage:
        return None
    this_run = usage.get("this_run") or {}
    rows = [[fmt(usage.get("requests")), fmt(this_run.get("asked")), fmt(this_run.get("failed")),
             f"{fmt(usage.get('prompt_tokens'), 'int')} / {fmt(usage.get('completion_tokens'), 'int')}",
             fmt(usage.get("cost_usd"))]]
    return (f"Judge {name}: {judge.get('model')} ({judge.get('backend')}), mode {judge.get('mode')}",
            ["requests", "asked in this run (the rest from the cache)", "failed", "tokens in / out", "cost (USD)"], rows)
