"""The confidence-interval chart of one metric, as inline SVG.

Each treatment is a row: its relative-lift confidence interval as a horizontal bar around a point
estimate, against a dashed line at 0 (no effect). The primary metric marks its MDE, a guardrail
its margin. Only black and greys, and every mark is also told in text (values beside each row,
significance as filled/hollow markers *and* the word), so the chart survives print and
colour-blindness. The SVG has explicit ``width``/``height``/``viewBox`` so it never collapses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from service.reports.format import is_number, pct

WIDTH = 820
LABEL_W = 150  # left column: variant keys
TEXT_W = 260  # right column: estimate and interval in text
ROW_H = 34
TOP = 44
BOTTOM = 64


@dataclass(frozen=True)
class ChartRow:
    """One treatment's relative lift: estimate, interval, significance, optional always-valid CI."""

    label: str
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    significant: bool
    seq_low: float | None = None
    seq_high: float | None = None


@dataclass(frozen=True)
class Marker:
    """A vertical reference line (MDE, guardrail margin) at a relative lift, with its label."""

    value: float
    label: str


def _finite(*values: float | None) -> list[float]:
    return [float(v) for v in values if v is not None and is_number(v)]


def _nice_step(span: float) -> float:
    raw = span / 5.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for mult in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= mult * magnitude:
            return mult * magnitude
    return 10.0 * magnitude  # pragma: no cover - the loop always returns


def ci_chart(title: str, rows: list[ChartRow], markers: list[Marker]) -> str:
    """Render the chart as an ``<svg>`` element string.

    Parameters
    ----------
    title : str
        Accessible title (escaped here).
    rows : list of ChartRow
        One per treatment; rows with a non-computable interval say so in text.
    markers : list of Marker
        Reference lines, e.g. the MDE of the primary metric or a guardrail's margin.

    Returns
    -------
    str
        An SVG element with explicit width, height and viewBox.
    """
    height = TOP + max(len(rows), 1) * ROW_H + BOTTOM
    values = [0.0]
    for r in rows:
        values += _finite(r.estimate, r.ci_low, r.ci_high, r.seq_low, r.seq_high)
    values += [m.value for m in markers if is_number(m.value)]
    lo, hi = min(values), max(values)
    span = hi - lo
    if span <= 0:
        span = 0.02
        lo, hi = lo - 0.01, hi + 0.01
    lo, hi = lo - 0.08 * span, hi + 0.08 * span
    x0, x1 = LABEL_W, WIDTH - TEXT_W

    def x(v: float) -> float:
        return x0 + (v - lo) / (hi - lo) * (x1 - x0)

    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="ci-chart" role="img" '
        f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#fff" stroke="#bbb"/>',
    ]
    axis_y = TOP + max(len(rows), 1) * ROW_H + 6
    # ticks and grid
    step = _nice_step(hi - lo)
    tick = math.ceil(lo / step) * step
    while tick <= hi + 1e-12:
        tx = x(tick)
        out.append(
            f'<line x1="{tx:.1f}" y1="{TOP - 8}" x2="{tx:.1f}" y2="{axis_y}" stroke="#e2e2e2"/>'
        )
        out.append(
            f'<text x="{tx:.1f}" y="{axis_y + 16}" font-size="11" text-anchor="middle" '
            f'fill="#333">{escape(pct(tick, signed=False))}</text>'
        )
        tick += step
    out.append(f'<line x1="{x0}" y1="{axis_y}" x2="{x1}" y2="{axis_y}" stroke="#000"/>')
    out.append(
        f'<text x="{(x0 + x1) / 2:.1f}" y="{axis_y + 34}" font-size="11" text-anchor="middle" '
        f'fill="#333">relative lift vs control (solid bar: confidence interval'
        f"{'; dotted: always-valid interval' if any(r.seq_low is not None for r in rows) else ''})"
        "</text>"
    )
    # zero line
    zx = x(0.0)
    out.append(
        f'<line class="zero" x1="{zx:.1f}" y1="{TOP - 8}" x2="{zx:.1f}" y2="{axis_y}" '
        'stroke="#000" stroke-dasharray="4 3"/>'
    )
    out.append(f'<text x="{zx:.1f}" y="{TOP - 12}" font-size="10" text-anchor="middle">0</text>')
    for m in markers:
        mx = x(m.value)
        out.append(
            f'<line class="marker" x1="{mx:.1f}" y1="{TOP - 8}" x2="{mx:.1f}" y2="{axis_y}" '
            'stroke="#555" stroke-width="1.5" stroke-dasharray="1 3"/>'
        )
        out.append(
            f'<text x="{mx:.1f}" y="{TOP - 26}" font-size="10" text-anchor="middle" fill="#333">'
            f"{escape(m.label)}</text>"
        )
    for i, r in enumerate(rows):
        cy = TOP + i * ROW_H + ROW_H / 2
        out.append(
            f'<text x="{LABEL_W - 10}" y="{cy + 4:.1f}" font-size="12" text-anchor="end">'
            f"{escape(r.label)}</text>"
        )
        if r.seq_low is not None and r.seq_high is not None and _finite(r.seq_low, r.seq_high):
            out.append(
                f'<line class="seq" x1="{x(r.seq_low):.1f}" y1="{cy + 8:.1f}" '
                f'x2="{x(r.seq_high):.1f}" y2="{cy + 8:.1f}" stroke="#666" stroke-width="2" '
                'stroke-dasharray="2 2"/>'
            )
        if len(_finite(r.estimate, r.ci_low, r.ci_high)) == 3:
            assert r.estimate is not None and r.ci_low is not None and r.ci_high is not None
            lx, hx, ex = x(r.ci_low), x(r.ci_high), x(r.estimate)
            out.append(
                f'<line class="ci" x1="{lx:.1f}" y1="{cy:.1f}" x2="{hx:.1f}" y2="{cy:.1f}" '
                'stroke="#000" stroke-width="3"/>'
            )
            for cap in (lx, hx):
                out.append(
                    f'<line x1="{cap:.1f}" y1="{cy - 6:.1f}" x2="{cap:.1f}" y2="{cy + 6:.1f}" '
                    'stroke="#000" stroke-width="2"/>'
                )
            fill = "#000" if r.significant else "#fff"
            out.append(
                f'<circle class="estimate" cx="{ex:.1f}" cy="{cy:.1f}" r="5" fill="{fill}" '
                'stroke="#000" stroke-width="2"/>'
            )
            text = (
                f"{pct(r.estimate)} [{pct(r.ci_low)}, {pct(r.ci_high)}]"
                f"{' significant' if r.significant else ' n.s.'}"
            )
        else:
            text = "not computable"
        out.append(f'<text x="{x1 + 10}" y="{cy + 4:.1f}" font-size="11">{escape(text)}</text>')
    out.append(
        f'<text x="{x0}" y="{axis_y + 50}" font-size="10" fill="#333">'
        "● filled = significant · ○ hollow = not significant</text>"
    )
    out.append("</svg>")
    return "".join(out)
