"""The pages' plots as SVG geometry: a line chart (the training loss, growing live) and a scatter plot with error bars
(the jobs of a sweep, quality against speed-up).

Hand-written rather than matplotlib (which the report uses): these are redrawn on every live update, in the
browser, from numbers sent over server-sent events, and matplotlib's SVG styles every element inline, which the
pages' content-security policy forbids. The geometry is computed here only; the templates draw it and the page's
script moves the same points. Each axis has a fixed number of ticks, so an update changes only their labels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

WIDTH, HEIGHT = 560, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 36  # margins for the tick labels
TICKS = 5


def _fmt(value: float) -> str:
    return f"{value:.3g}"


@dataclass(frozen=True)
class Axis:
    low: float
    high: float

    @classmethod
    def over(cls, values: list[float]) -> "Axis":
        low, high = (min(values), max(values)) if values else (0.0, 1.0)
        if high - low < 1e-12:
            low, high = low - 0.5, high + 0.5
        pad = (high - low) * 0.05
        # Losses, scores and speed-ups are never negative: the axis does not pretend they could be.
        return cls(max(low - pad, 0.0) if min(values, default=0.0) >= 0 else low - pad, high + pad)

    def at(self, value: float, start: float, end: float) -> float:
        return round(start + (value - self.low) / (self.high - self.low) * (end - start), 2)

    def ticks(self) -> list[str]:
        return [_fmt(self.low + i * (self.high - self.low) / (TICKS - 1)) for i in range(TICKS)]


@dataclass
class Chart:
    """What a template draws: one polyline per series, points with error bars, tick labels at fixed places."""

    x_label: str
    y_label: str
    lines: dict[str, str] = field(default_factory=dict)  # series -> SVG polyline points "x,y x,y"
    points: list[dict[str, Any]] = field(default_factory=list)  # {label, x, y, low, high}
    x_ticks: list[str] = field(default_factory=list)
    y_ticks: list[str] = field(default_factory=list)
    empty: bool = True
    width: int = WIDTH
    height: int = HEIGHT

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def x_tick_positions(self) -> list[float]:
        return [LEFT + i * (self.width - LEFT - RIGHT) / (TICKS - 1) for i in range(TICKS)]

    @property
    def y_tick_positions(self) -> list[float]:
        return [self.height - BOTTOM - i * (self.height - TOP - BOTTOM) / (TICKS - 1) for i in range(TICKS)]

    @property
    def plot_box(self) -> dict[str, float]:
        return {"x": LEFT, "y": TOP, "w": self.width - LEFT - RIGHT, "h": self.height - TOP - BOTTOM}


def line_chart(series: dict[str, list[list[float]]], x_label: str, y_label: str) -> Chart:
    """`series`: name -> [[x, y], ...] (the loss by optimizer step)."""
    xs = [p[0] for points in series.values() for p in points]
    ys = [p[1] for points in series.values() for p in points]
    chart = Chart(x_label, y_label, empty=not xs)
    x_axis, y_axis = Axis.over(xs), Axis.over(ys)
    for name, points in series.items():
        chart.lines[name] = " ".join(
            f"{x_axis.at(x, LEFT, WIDTH - RIGHT)},{y_axis.at(y, HEIGHT - BOTTOM, TOP)}" for x, y in points)
    chart.x_ticks, chart.y_ticks = x_axis.ticks(), y_axis.ticks()
    return chart


def scatter_chart(points: list[tuple[str, float, float, float | None, float | None]], x_label: str,
                  y_label: str) -> Chart:
    """`points`: (label, x, y, y_low, y_high) for each job; the interval becomes an error bar."""
    shown = [p for p in points if p[1] is not None and p[2] is not None]
    ys = [v for p in shown for v in (p[2], p[3], p[4]) if v is not None]
    chart = Chart(x_label, y_label, empty=not shown)
    x_axis, y_axis = Axis.over([p[1] for p in shown]), Axis.over(ys)
    for label, x, y, low, high in shown:
        at = x_axis.at(x, LEFT, WIDTH - RIGHT)
        left_half = at < (LEFT + WIDTH - RIGHT) / 2  # a label reads away from the nearer edge, never cut off
        chart.points.append({
            "label": label, "x": at, "y": y_axis.at(y, HEIGHT - BOTTOM, TOP),
            "label_x": at + 7 if left_half else at - 7, "anchor": "start" if left_half else "end",
            "low": y_axis.at(low if low is not None else y, HEIGHT - BOTTOM, TOP),
            "high": y_axis.at(high if high is not None else y, HEIGHT - BOTTOM, TOP)})
    chart.x_ticks, chart.y_ticks = x_axis.ticks(), y_axis.ticks()
    return chart
