"""The report's plots, drawn with matplotlib (Agg) as SVG text: inlined in report.html (self-contained)
and written to plots/*.svg for report.md. Each function returns None when there is nothing to draw."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

from distilflow.report.tables import model_results
from distilflow.results import ModelResult

COLORS = {"teacher": "#4c72b0", "baseline": "#8c8c8c", "distilled": "#dd8452"}
_FALLBACK = ["#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#ccb974"]


def _color(label: str, index: int) -> str:
    return COLORS.get(label, _FALLBACK[index % len(_FALLBACK)])


def _evaluated(report: dict[str, Any]) -> dict[str, ModelResult]:
    return {label: m for label, m in model_results(report).items() if m.evaluated}


def _to_svg(fig, salt: str) -> str:
    """The figure as an inline <svg> element: no XML prolog, no DOCTYPE (it names an external DTD), no
    metadata block, and every id prefixed with the plot's name, so several SVGs in one page never share one."""
    import matplotlib
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "path"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buffer.getvalue()
    text = re.sub(r"<\?xml[^>]*\?>\s*", "", text)
    text = re.sub(r"<!DOCTYPE[^>]*>\s*", "", text)
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.DOTALL)
    ids = set(re.findall(r'\sid="([^"]+)"', text))
    text = re.sub(r'(\sid=")([^"]+)"', lambda m: f'{m.group(1)}{salt}-{m.group(2)}"', text)
    text = re.sub(r'((?:xlink:)?href="#|url\(#)([^")]+)',
                  lambda m: f"{m.group(1)}{salt}-{m.group(2)}" if m.group(2) in ids else m.group(0), text)
    return text.strip()


def _figure(columns: int, height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, columns, figsize=(max(4.0, 3.4 * columns), height), squeeze=False,
                             layout="constrained")
    return fig, list(axes[0])


def _score_and_high(model: ModelResult, name: str) -> list[float]:
    interval = model.interval(name)
    return [v for v in (model.score(name), interval.high if interval else None) if v is not None]


def scores_svg(report: dict[str, Any]) -> str | None:
    """Each task metric per model, with its 95% bootstrap interval as an error bar."""
    models = {label: m for label, m in _evaluated(report).items() if m.task_metrics}
    names = [n for n in report["metric_names"] if any(n in m.task_metrics for m in models.values())]
    if not models or not names:
        return None
    fig, axes = _figure(len(names))
    for ax, name in zip(axes, names):
        for i, (label, model) in enumerate(models.items()):
            value = model.score(name)
            if value is None:
                continue
            interval = model.interval(name)
            error = None
            if interval is not None and interval.low is not None and interval.high is not None:
                error = [[max(0.0, value - interval.low)], [max(0.0, interval.high - value)]]
            ax.bar(i, value, color=_color(label, i), yerr=error, capsize=6, ecolor="#222222")
            ax.annotate(f"{value:.3g}", (i, value), textcoords="offset points", xytext=(0, 3), ha="center",
                        fontsize=8)
        ax.set_xticks(range(len(models)), list(models), rotation=15)
        top = max((v for m in models.values() for v in _score_and_high(m, name)), default=0.0)
        ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)  # all-zero scores: a readable axis, not +-0.05
        ax.set_title(f"{name} (95% CI)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Task score per model")
    return _to_svg(fig, "scores")


# The latency plot's series: name and the figure it shows (seconds).
LATENCY_SERIES: list[tuple[str, Callable[[ModelResult], float | None]]] = [
    ("mean", lambda m: m.latency_mean_s), ("p50", lambda m: m.latency_p50_s), ("p95", lambda m: m.latency_p95_s),
    ("first token", lambda m: m.ttft_mean_s)]


def latency_svg(report: dict[str, Any]) -> str | None:
    """Latency per answer (mean, p50, p95) and time to first token, in milliseconds."""
    models = {label: m for label, m in _evaluated(report).items() if m.latency_mean_s is not None}
    if not models:
        return None
    fig, axes = _figure(1, height=3.4)
    ax = axes[0]
    width = 0.8 / len(LATENCY_SERIES)
    shades = ["#4c72b0", "#64b5cd", "#8172b3", "#55a868"]
    for s, (name, figure) in enumerate(LATENCY_SERIES):
        values = [(figure(m) or 0.0) * 1000 for m in models.values()]
        ax.bar([i + (s - 1.5) * width for i in range(len(models))], values, width, label=name, color=shades[s])
    ax.set_xticks(range(len(models)), [label + (" (network)" if m.network else "") for label, m in models.items()])
    ax.set_ylabel("ms per answer (batch size 1)")
    ax.set_title("Latency per model")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _to_svg(fig, "latency")


def memory_svg(report: dict[str, Any]) -> str | None:
    """Peak memory and model memory (MB), and parameter count, per model."""
    models = {label: m for label, m in _evaluated(report).items() if m.peak_memory_mb is not None}
    if not models:
        return None
    fig, axes = _figure(2)
    memory, params = axes
    for i, (label, model) in enumerate(models.items()):
        memory.bar(i - 0.2, model.peak_memory_mb, 0.4, color=_color(label, i), label="peak" if i == 0 else None)
        memory.bar(i + 0.2, model.model_memory_mb or 0.0, 0.4, color=_color(label, i), alpha=0.5,
                   hatch="//", label="model" if i == 0 else None)
        params.bar(i, (model.parameters or 0) / 1e6, color=_color(label, i))
    memory.set_xticks(range(len(models)), list(models))
    memory.set_ylabel("MB")
    memory.set_title("Peak memory (solid) / model memory (hatched)")
    params.set_xticks(range(len(models)), list(models))
    params.set_ylabel("millions")
    params.set_title("Parameters")
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    return _to_svg(fig, "memory")


def loss_svg(report: dict[str, Any]) -> str | None:
    curves = (report.get("training") or {}).get("loss_curve") or {}
    if not curves:
        return None
    fig, axes = _figure(1)
    ax = axes[0]
    styles = {"train_loss": ("training loss", "#dd8452", "-"), "validation_loss": ("validation loss", "#4c72b0", "--")}
    for key, points in curves.items():
        name, color, line = styles.get(key, (key, "#333333", "-"))
        ax.plot([p[0] for p in points], [p[1] for p in points], line, color=color, marker="o", markersize=4,
                label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("Student training loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _to_svg(fig, "loss")


def confusion_svg(report: dict[str, Any]) -> str | None:
    """Classification: reference label (rows) x answered label (columns), one panel per model, as shares of
    each reference label's inputs."""
    matrices = report.get("confusion") or {}
    if not matrices:
        return None
    rows = sorted({ref for m in matrices.values() for ref in m})
    columns = rows + sorted({a for m in matrices.values() for cell in m.values() for a in cell} - set(rows))
    fig, axes = _figure(len(matrices), height=0.32 * len(rows) + 2.2)
    for ax, (label, matrix) in zip(axes, matrices.items()):
        table = [[matrix.get(ref, {}).get(col, 0) / max(1, sum(matrix.get(ref, {}).values())) for col in columns]
                 for ref in rows]
        ax.imshow(table, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        ax.set_title(label)
        ax.set_yticks(range(len(rows)), rows if ax is axes[0] else [""] * len(rows), fontsize=7)
        ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
        ax.set_xlabel("answered")
    axes[0].set_ylabel("reference")
    return _to_svg(fig, "confusion")


def tuning_svg(report: dict[str, Any]) -> str | None:
    """distilflow tune: each trial's validation score against each setting, one panel per setting (the chosen
    trial in orange, pruned trials hollow: their score is the one they were stopped at)."""
    tuning = report.get("tuning") or {}
    trials = [t for t in tuning.get("trials", []) if t.get("value") is not None]
    names = sorted({name for t in trials for name in t.get("settings", {})})
    if not trials or not names:
        return None
    fig, axes = _figure(len(names))
    for ax, name in zip(axes, names):
        values = [t["settings"].get(name) for t in trials]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        xs = values if numeric else [str(v) for v in values]
        for x, t in zip(xs, trials):
            chosen = t["number"] == tuning["best"]["number"]
            color = "#dd8452" if chosen else "#4c72b0"
            ax.scatter([x], [t["value"]], s=36, color=color if t["state"] != "pruned" else "none", edgecolors=color)
        if numeric and min(values) > 0 and max(values) / min(values) >= 10:
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"validation {tuning.get('metric', 'score')}")
    return _to_svg(fig, "tuning")


def balance_svg(report: dict[str, Any]) -> str | None:
    """Tasks of fixed answers: rows per label, one bar per split (and the inputs the teacher wrote), side by side."""
    data = report.get("data") or {}
    counts = {split: p["by_label"] for split, p in (data.get("splits") or {}).items() if p.get("by_label")}
    written = (data.get("written") or {}).get("by_label")
    if written:
        counts["written"] = written
    if not counts:
        return None
    labels = list(next(iter(counts.values())))
    fig, axes = _figure(1, height=0.22 * len(labels) * max(1, len(counts) / 2) + 1.6)
    ax, width = axes[0], 0.8 / len(counts)
    for index, (split, by_label) in enumerate(counts.items()):
        ax.barh([i + index * width for i in range(len(labels))], [by_label.get(label, 0) for label in labels],
                height=width, label=split, color=_color(split, index))
    ax.set_yticks([i + 0.4 - width / 2 for i in range(len(labels))], labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("rows")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="x")
    return _to_svg(fig, "balance")


PLOTS = {"scores": scores_svg, "latency": latency_svg, "memory": memory_svg, "loss": loss_svg,
         "confusion": confusion_svg, "balance": balance_svg,
         "tuning": tuning_svg}


def all_plots(report: dict[str, Any]) -> dict[str, str]:
    return {name: svg for name, draw in PLOTS.items() if (svg := draw(report)) is not None}
