"""Geometry of the report's inline SVG charts; the templates draw them (``macros.html.j2``).

- :func:`forest_plot`: every metric × treatment as a row, its relative lift and confidence
  interval against a dashed line at 0, the primary's MDE and each guardrail's margin marked on
  its row. Significance is told by fill *and* in words, so the chart survives print and
  colour-blindness.
- :func:`lift_over_time`: the primary metric's cumulative relative lift per day (§12 series)
  with its confidence band (and the confidence sequence on a sequential design).
- :func:`progress_bar`: power progress.

Every chart has explicit ``width``/``height``/``viewBox`` and scales down with the page
(``max-width: 100%``), so it never overflows at 1280 px nor on A4 or Letter paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.reports.format import is_number, pct


@dataclass(frozen=True)
class Tick:
    pos: float
    label: str


@dataclass(frozen=True)
class ForestInput:
    """One row of the forest plot, in relative-lift units (0.05 = +5%)."""

    label: str
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    significant: bool
    marker: float | None = None  # MDE or guardrail margin, on this row
    marker_label: str = ""
    invalid: bool = False


@dataclass(frozen=True)
class ForestRow:
    y: float
    label: str
    text: str
    x_low: float | None
    x_high: float | None
    x_est: float | None
    filled: bool
    marker_x: float | None
    marker_label: str
    invalid: bool


@dataclass(frozen=True)
class ForestPlot:
    width: int
    height: int
    label_w: int
    plot_x1: float
    top: int
    axis_y: float
    zero_x: float
    ticks: list[Tick]
    rows: list[ForestRow]
    title: str


def _finite(*values: float | None) -> list[float]:
    return [float(v) for v in values if v is not None and is_number(v)]


def nice_step(span: float, count: int = 5) -> float:
    """A round tick step (1, 2, 2.5 or 5 × 10^k) giving about ``count`` ticks over ``span``."""
    raw = max(span, 1e-12) / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for mult in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= mult * magnitude:
            return mult * magnitude
    return 10.0 * magnitude  # pragma: no cover - the loop always returns


def _range(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    span = hi - lo
    if span <= 0:
        lo, hi, span = lo - 0.01, hi + 0.01, 0.02
    return lo - 0.08 * span, hi + 0.08 * span


def _ticks(lo: float, hi: float, to_pos: object) -> list[Tick]:
    assert callable(to_pos)
    step = nice_step(hi - lo)
    out, tick = [], math.ceil(lo / step) * step
    while tick <= hi + 1e-12:
        out.append(Tick(float(to_pos(tick)), pct(0.0 if abs(tick) < 1e-12 else tick)))
        tick += step
    return out


FOREST_W, FOREST_LABEL_W, FOREST_TEXT_W, FOREST_ROW_H, FOREST_TOP = 1000, 250, 250, 30, 36


def forest_plot(title: str, inputs: list[ForestInput]) -> ForestPlot:
    """The geometry of the forest plot of ``inputs`` (one row each, top to bottom)."""
    values = [0.0]
    for r in inputs:
        values += _finite(r.estimate, r.ci_low, r.ci_high, r.marker)
    lo, hi = _range(values)
    x0, x1 = float(FOREST_LABEL_W), float(FOREST_W - FOREST_TEXT_W)

    def x(v: float) -> float:
        return round(x0 + (v - lo) / (hi - lo) * (x1 - x0), 1)

    rows = []
    for i, r in enumerate(inputs):
        y = FOREST_TOP + i * FOREST_ROW_H + FOREST_ROW_H / 2
        ok = len(_finite(r.estimate, r.ci_low, r.ci_high)) == 3
        text = (
            f"{pct(r.estimate)} [{pct(r.ci_low)}, {pct(r.ci_high)}]"
            f"{' significant' if r.significant else ' n.s.'}"
            if ok
            else "not computable"
        )
        if r.invalid:
            text += " · invalid"
        rows.append(
            ForestRow(
                y=y,
                label=r.label,
                text=text,
                x_low=x(r.ci_low) if ok and r.ci_low is not None else None,
                x_high=x(r.ci_high) if ok and r.ci_high is not None else None,
                x_est=x(r.estimate) if ok and r.estimate is not None else None,
                filled=r.significant,
                marker_x=x(r.marker) if r.marker is not None and is_number(r.marker) else None,
                marker_label=r.marker_label,
                invalid=r.invalid,
            )
        )
    axis_y = FOREST_TOP + max(len(inputs), 1) * FOREST_ROW_H + 4
    return ForestPlot(
        width=FOREST_W,
        height=int(axis_y + 54),
        label_w=FOREST_LABEL_W,
        plot_x1=x1,
        top=FOREST_TOP,
        axis_y=axis_y,
        zero_x=x(0.0),
        ticks=_ticks(lo, hi, x),
        rows=rows,
        title=title,
    )


@dataclass(frozen=True)
class SeriesInput:
    """One treatment's daily cumulative relative lift (§12 series)."""

    label: str
    days: list[int]
    estimate: list[float | None]
    ci_low: list[float | None]
    ci_high: list[float | None]
    seq_low: list[float | None] | None = None
    seq_high: list[float | None] | None = None


@dataclass(frozen=True)
class LineChart:
    width: int
    height: int
    left: int
    right: float
    top: int
    bottom: float
    zero_y: float | None
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    band: str  # polygon points of the confidence band
    seq_band: str  # polygon points of the confidence sequence ('' without one)
    line: str  # polyline points of the estimate
    dots: list[tuple[float, float]]
    label: str
    last_text: str
    title: str


LINE_W, LINE_H, LINE_LEFT, LINE_RIGHT, LINE_TOP, LINE_BOTTOM = 1000, 260, 70, 230, 20, 40


def _points(xs: list[float], ys: list[float]) -> str:
    return " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs, ys, strict=True))


def lift_over_time(title: str, s: SeriesInput) -> LineChart | None:
    """The geometry of one treatment's lift over time (None with no computable day)."""
    keep = [
        i for i in range(len(s.days)) if len(_finite(s.estimate[i], s.ci_low[i], s.ci_high[i])) == 3
    ]
    if not keep:
        return None
    seq = s.seq_low is not None and s.seq_high is not None
    values = [0.0]
    for i in keep:
        values += _finite(s.estimate[i], s.ci_low[i], s.ci_high[i])
        if seq:
            assert s.seq_low is not None and s.seq_high is not None
            values += _finite(s.seq_low[i], s.seq_high[i])
    lo, hi = _range(values)
    d0, d1 = s.days[keep[0]], s.days[keep[-1]]
    x0, x1 = float(LINE_LEFT), float(LINE_W - LINE_RIGHT)
    y0, y1 = float(LINE_TOP), float(LINE_H - LINE_BOTTOM)

    def x(d: float) -> float:
        return x0 + (x1 - x0) / 2 if d1 == d0 else x0 + (d - d0) / (d1 - d0) * (x1 - x0)

    def y(v: float) -> float:
        return round(y1 - (v - lo) / (hi - lo) * (y1 - y0), 1)

    xs = [x(s.days[i]) for i in keep]
    est = [float(s.estimate[i] or 0.0) for i in keep]
    low = [float(s.ci_low[i] or 0.0) for i in keep]
    high = [float(s.ci_high[i] or 0.0) for i in keep]
    band = _points(xs + xs[::-1], [y(v) for v in high] + [y(v) for v in low[::-1]])
    seq_band = ""
    if seq:
        assert s.seq_low is not None and s.seq_high is not None
        sk = [i for i in keep if len(_finite(s.seq_low[i], s.seq_high[i])) == 2]
        if sk:
            sx = [x(s.days[i]) for i in sk]
            sh = [y(float(s.seq_high[i] or 0.0)) for i in sk]
            sl = [y(float(s.seq_low[i] or 0.0)) for i in sk]
            seq_band = _points(sx + sx[::-1], sh + sl[::-1])
    step = max(1, math.ceil((d1 - d0 + 1) / 10))
    x_ticks = [Tick(x(d), f"day {d}") for d in range(d0, d1 + 1, step)]
    y_ticks = [Tick(t.pos, t.label) for t in _ticks(lo, hi, y)]
    last = keep[-1]
    return LineChart(
        width=LINE_W,
        height=LINE_H,
        left=LINE_LEFT,
        right=x1,
        top=LINE_TOP,
        bottom=y1,
        zero_y=y(0.0),
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        band=band,
        seq_band=seq_band,
        line=_points(xs, [y(v) for v in est]),
        dots=[(a, y(v)) for a, v in zip(xs, est, strict=True)],
        label=s.label,
        last_text=(
            f"day {s.days[last]}: {pct(s.estimate[last])} "
            f"[{pct(s.ci_low[last])}, {pct(s.ci_high[last])}]"
        ),
        title=title,
    )


@dataclass(frozen=True)
class ProgressBar:
    width: int
    fill: float
    label: str


def progress_bar(progress: float | None) -> ProgressBar:
    width = 300
    frac = 0.0 if progress is None else max(0.0, min(progress, 1.0))
    return ProgressBar(width=width, fill=round(frac * width, 1), label=pct(progress, signed=False))
