"""What the report's tables and summary show, cell by cell: shared by report.md and report.html (and the
command line's `fmt`), so the two files always say the same thing."""

from __future__ import annotations

from typing import Any

from distilflow.results import ModelResult


def fmt(value: Any, kind: str = "num") -> str:
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{value * 100:.1f}%"
    if kind == "x":
        return f"{value:.2f}x"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "ms":
        return f"{value * 1000:.1f}"
    if kind == "yesno":
        return "yes" if value else "no"
    if kind == "duration":  # seconds, as a person reads a wait: 8.2 s, 3 min 05 s, 1 h 02 min
        if value < 59.95:  # (59.96 s would print as "60.0 s")
            return f"{value:.1f} s"
        minutes, seconds = divmod(round(value), 60)
        return f"{minutes} min {seconds:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def model_results(report: dict[str, Any]) -> dict[str, ModelResult]:
    """The report's models, in its label order, read through the one result schema."""
    return {label: ModelResult.of(report["models"][label]) for label in report["labels"]}


def score_cell(model: ModelResult, name: str) -> str:
    value = model.score(name)
    interval = model.interval(name)
    if value is None:
        return "n/a"
    if interval is None or interval.low is None:
        return fmt(value)
    return f"{fmt(value)} [{fmt(interval.low)}, {fmt(interval.high)}]"


def _agreement_cell(model: ModelResult, reference: str) -> str:
    agreement = model.agreement_with_teacher
    if agreement is None:
        return "n/a"
    how = f"BLEU vs {reference}" if agreement.kind == "bleu_vs_teacher" else "same answer"
    return f"{fmt(agreement.value)} [{fmt(agreement.low)}, {fmt(agreement.high)}] ({how})"


def quality_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Model x task metric (with 95% interval), n and agreement with the teacher."""
    reference = report.get("agreement_reference", "teacher")
    header = ["model", *[f"{m} [95% CI]" for m in report["metric_names"]], "n", f"agreement with {reference}"]
    rows = []
    for label, m in model_results(report).items():
        if not m.evaluated:
            rows.append([label, *([f"not evaluated: {m.reason}"] + [""] * (len(header) - 2))])
            continue
        rows.append([label, *[score_cell(m, name) for name in report["metric_names"]],
                     fmt(m.scored_examples, "int"), _agreement_cell(m, reference)])
    return header, rows


def performance_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "latency mean / p50 / p95 (ms)", "time to first token (ms)", "answers/s (batch)",
              "output tok/s (batch)", "peak memory (MB)", "model memory (MB)", "parameters", "size on disk (MB)",
              "cost / 1k answers"]
    rows = []
    for label, m in model_results(report).items():
        if not m.evaluated:
            rows.append([label, *(["not evaluated"] + [""] * (len(header) - 2))])
            continue
        latency = " / ".join(fmt(v, "ms") for v in (m.latency_mean_s, m.latency_p50_s, m.latency_p95_s))
        if m.network:
            latency += " (over the network)"
        batch = m.throughput_batch_size
        answers_per_s = fmt(m.throughput_answers_per_s) + (
            f" (bs {batch})" if batch and m.throughput_answers_per_s else "")
        rows.append([label, latency, fmt(m.ttft_mean_s, "ms"), answers_per_s, fmt(m.throughput_output_tokens_per_s),
                     fmt(m.peak_memory_mb), fmt(m.model_memory_mb), fmt(m.parameters, "int"),
                     fmt(m.size_on_disk_mb), fmt(m.cost_per_1000_answers)])
    return header, rows


def summary_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs of the headline figures of a job report."""
    c = report.get("comparison")
    if not c:
        return []
    primary = c["primary_metric"]
    rel = c["distilled_vs_teacher"]
    overlap = c["improvement_intervals_overlap"]
    overlap_text = "" if overlap is None else (" (95% intervals overlap: the gain may be noise)" if overlap
                                               else " (95% intervals do not overlap)")
    network = " (teacher latency is over the network)" if rel.get("reference_over_network") else ""
    return [
        (f"Retention (distilled / teacher {primary})", fmt(c["retention"], "pct")),
        (f"Improvement over the baseline student ({primary}, absolute)",
         fmt(c["improvement_over_baseline"]) + overlap_text),
        ("Speed-up (teacher latency / distilled latency)",
         f"{fmt(c['speedup'], 'x')} (latency reduction {fmt(c['latency_reduction'], 'pct')}){network}"),
        *([("Speed-up against the teacher without its prefix cache", fmt(c["speedup_vs_uncached"], "x"))]
          if c.get("speedup_vs_uncached") else []),
        ("Throughput speed-up (answers/s at the batch size)", fmt(rel.get("throughput_speedup"), "x")),
        ("Peak memory reduction", f"{fmt(c['memory_reduction'], 'pct')} (model memory: "
                                  f"{fmt(rel.get('model_memory_reduction'), 'pct')})"),
        ("Parameter reduction", fmt(c["parameter_reduction"], "pct")),
        ("Size on disk reduction", fmt(rel.get("size_reduction"), "pct")),
    ]


def relative_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """For a comparison of any models: each model against the first one."""
    if not report.get("relative"):
        return None
    first, primary = report["relative_to"], report["primary_metric"]
    header = ["model", f"retention of {first}'s {primary}", "95% intervals overlap", "speed-up (latency)",
              "latency reduction", "throughput speed-up", "peak memory reduction", "parameter reduction"]
    rows = []
    for label, r in report["relative"].items():
        overlap = r["intervals_overlap"].get(primary)
        rows.append([label, fmt(r["retention"].get(primary), "pct"), "n/a" if overlap is None else fmt(overlap, "yesno"),
                     fmt(r["speedup"], "x"), fmt(r["latency_reduction"], "pct"), fmt(r["throughput_speedup"], "x"),
                     fmt(r["memory_reduction"], "pct"), fmt(r["parameter_reduction"], "pct")])
    return header, rows


def teacher_target_facts(train: dict[str, Any]) -> list[tuple[str, str]]:
    """What the logit methods could use of the teacher's log-probs: rows without targets, and (across tokenizers)
    the student tokens aligned and the teacher pieces no student token spells. Empty for methods without them."""
    facts: list[tuple[str, str]] = []
    if train.get("rows_with_teacher_targets") is not None:
        reasons = train.get("rows_without_teacher_targets_by_reason") or {}
        why = f" ({', '.join(f'{n} {r}' for r, n in reasons.items())})" if reasons else ""
        counts = f"{fmt(train['rows_with_teacher_targets'])} / {fmt(train.get('rows_without_teacher_targets'))}"
        facts.append(("rows with teacher targets / without", counts + why))
    if train.get("stored_teacher_tokens"):
        facts.append(("stored top-k tokens not in the student's vocabulary",
                      f"{fmt(train.get('unmappable_teacher_tokens'))} of {fmt(train['stored_teacher_tokens'])}"))
    if train.get("cross_tokenizer_rows"):
        aligned, unaligned = train.get("aligned_student_tokens", 0), train.get("unaligned_student_tokens", 0)
        rows = f"{fmt(aligned)} / {fmt(unaligned)} in {fmt(train['cross_tokenizer_rows'])} rows"
        facts.append(("across tokenizers: answer tokens aligned / unaligned (cross-entropy only)", rows))
        share = fmt(100 * train.get("unmatched_teacher_mass_share", 0.0))
        pieces = f"{fmt(train.get('unmatched_teacher_pieces'))} of {fmt(train.get('cross_tokenizer_teacher_pieces'))}"
        facts.append(("across tokenizers: teacher top-k pieces with no student token (ULD)",
                      f"{pieces}, {share}% of the probability per span"))
    return facts
