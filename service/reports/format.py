"""Number and text formatting shared by every rendering (HTML, Markdown, charts, the index).

One formatter per kind of number, so that HTML, Markdown and the tests agree on precision:
estimates and p-values carry 4 significant digits, relative effects are percentages with two
decimals, days one decimal. ``None`` (JSON ``null``: not computable) prints as an em dash.
"""

from __future__ import annotations

import math
from datetime import datetime

DASH = "—"


def is_number(value: object) -> bool:
    """True for a finite int or float (not a bool)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def num(value: object, digits: int = 4) -> str:
    """A number with ``digits`` significant digits; integers print whole with separators."""
    if not is_number(value):
        return DASH
    if isinstance(value, int):
        return f"{value:,}"
    assert isinstance(value, float)
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.{digits}g}"


def pct(value: object, *, signed: bool = True) -> str:
    """A fraction as a percentage with two decimals (0.0523 → ``+5.23%``)."""
    if not is_number(value):
        return DASH
    assert isinstance(value, (int, float))
    return f"{100.0 * float(value):{'+' if signed else ''}.2f}%"


def share(value: object) -> str:
    """A fraction as an unsigned percentage (weights, progress, shares)."""
    return pct(value, signed=False)


def days(value: object) -> str:
    """A duration in days with one decimal (``< 0.1`` for less: minutes are not days)."""
    if not is_number(value):
        return DASH
    assert isinstance(value, (int, float))
    if 0 < float(value) < 0.05:
        return "< 0.1"
    return f"{float(value):.1f}"


def ci(low: object, high: object, fmt: str = "num") -> str:
    """An interval ``[low, high]`` as numbers (``fmt="num"``) or percentages (``"pct"``)."""
    if not (is_number(low) and is_number(high)):
        return DASH
    f = pct if fmt == "pct" else num
    return f"[{f(low)}, {f(high)}]"


def when(value: datetime | str | None) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM UTC``."""
    if value is None or value == "":
        return DASH
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    return dt.strftime("%Y-%m-%d %H:%M UTC")


def yes_no(value: object) -> str:
    """``yes``/``no`` for a boolean, a dash otherwise."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return DASH
