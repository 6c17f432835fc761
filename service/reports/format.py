"""Number and text formatting shared by the HTML and Markdown renderers.

One formatter per kind of number, so that HTML, Markdown and the tests agree on precision:
estimates and p-values carry 4 significant digits, relative effects are percentages with two
decimals. ``None`` (JSON ``null``: not computable) prints as an em dash.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

DASH = "—"


def is_number(value: Any) -> bool:
    """True for a finite int or float (not a bool)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def num(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits; integers print whole with separators."""
    if not is_number(value):
        return DASH
    if isinstance(value, int):
        return f"{value:,}"
    return f"{float(value):.{digits}g}"


def pct(value: Any, *, signed: bool = True) -> str:
    """A fraction as a percentage with two decimals (0.0523 → ``+5.23%``)."""
    if not is_number(value):
        return DASH
    return f"{100.0 * float(value):{'+' if signed else ''}.2f}%"


def ci(low: Any, high: Any, fmt: Any = num) -> str:
    """An interval ``[low, high]`` in the given formatter."""
    if not (is_number(low) and is_number(high)):
        return DASH
    return f"[{fmt(low)}, {fmt(high)}]"


def when(value: Any) -> str:
    """An ISO timestamp (or datetime) as ``YYYY-MM-DD HH:MM UTC``."""
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


def yes_no(value: Any) -> str:
    """``yes``/``no`` for a boolean, a dash otherwise."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return DASH


def reason_text(reason: Any) -> str:
    """A decision reason as text: a string as it is, an object by its message or code."""
    if isinstance(reason, str):
        return reason
    if isinstance(reason, dict):
        for field in ("message", "detail", "text", "reason"):
            if isinstance(reason.get(field), str):
                code = reason.get("code")
                return f"{reason[field]} ({code})" if isinstance(code, str) else str(reason[field])
        if isinstance(reason.get("code"), str):
            return str(reason["code"])
    return str(reason)
