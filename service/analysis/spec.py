"""What an aggregation computes, whatever runs it: a metric's spec, the analysis window, the
sufficient statistics' SQL terms (§6), a result row read into sums, the winsorization cut points.

Shared by the one query builder (``service.analysis.query``), the built-in store
(``service.analysis.aggregate``) and every data source (``service.warehouse.source``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "MICROS_PER_SECOND",
    "OTHER",
    "UNKNOWN",
    "CutWanted",
    "Cuts",
    "ExposureCounts",
    "MetricSpec",
    "MetricSums",
    "Window",
    "cut_points",
    "cuts_wanted",
    "kind_of",
    "metric_sums_of",
    "percentile_linear",
    "sum_terms",
]

MICROS_PER_SECOND = 1_000_000


@dataclass(frozen=True)
class MetricSpec:
    """What to aggregate for one metric (a row of ``metric``, reduced to what the SQL needs)."""

    key: str
    type: str  # binomial | mean | ratio
    event: str | None = None
    aggregation: str | None = None  # mean only: sum | count
    numerator_event: str | None = None
    denominator_event: str | None = None
    winsorize_lower: float | None = None
    winsorize_upper: float | None = None
    quantile: float | None = None  # quantile metrics: the level

    @property
    def winsorized(self) -> bool:
        return self.type != "binomial" and (
            self.winsorize_lower is not None or self.winsorize_upper is not None
        )

    @property
    def parts(self) -> list[tuple[str, str]]:
        """(column suffix, event name) of each per-unit value: one, or num/den for a ratio."""
        if self.type == "ratio":
            assert self.numerator_event is not None and self.denominator_event is not None
            return [("num", self.numerator_event), ("den", self.denominator_event)]
        assert self.event is not None
        return [("x", self.event)]


@dataclass(frozen=True)
class Window:
    """The analysis window shared by every unit of the experiment."""

    experiment_id: int
    phase: int
    overrides: Sequence[str] = ()
    attribution_window_hours: float | None = None
    stopped_at: datetime | None = None
    pre_period_days: int | None = None  # None: no CUPED pre-period
    # Time cut (exclusive): only units first exposed before it and events before it count, as if
    # nothing after it had been ingested (the results over time, service.snapshots).
    until: datetime | None = None
    # Slices: the exposure attributes whose values (at the unit's first exposure) group the sums,
    # each with the values kept as themselves; any other value is ``other``, none ``unknown``.
    dimensions: Sequence[tuple[str, Sequence[str]]] = ()
    # Only units also analysed in another experiment's phase and variant: (experiment id, phase,
    # variant). The interaction check (service/alerts/interactions.py) reads one cell at a time.
    also_in: tuple[int, int, str] | None = None


OTHER = "other"
UNKNOWN = "unknown"


@dataclass
class MetricSums:
    """Per-variant sums of one metric; keys as in ``stats.MeanSummary`` / ``RatioSummary``."""

    n: int
    sums: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ExposureCounts:
    """Exposed units of the phase per variant, and the two exclusions."""

    units: dict[str, int]  # analysed units per variant
    multiple_exposures: int
    overridden_units: int


def percentile_linear(lower: float, upper: float | None, h: float) -> float:
    """numpy's default percentile from the two order statistics around ``h = p (n - 1)``."""
    frac = h - math.floor(h)
    if upper is None or frac == 0.0:
        return lower
    return lower + frac * (upper - lower)


def kind_of(m: MetricSpec) -> str:
    """How a metric's per-unit value is aggregated from its events: ``any`` (1 if the unit has
    at least one), ``count`` or ``sum`` of the values."""
    if m.type == "binomial":
        return "any"
    if m.type in ("mean", "quantile") and m.aggregation == "count":
        return "count"
    return "sum"


def sum_terms(
    metrics: Sequence[MetricSpec], values: dict[tuple[str, str, bool], str]
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The per-variant sufficient statistics of §6 as SQL aggregates over per-unit values: the
    one definition every engine's statement selects.

    ``values``: (metric key, part, is pre-period) -> the SQL of the (capped) per-unit value.
    Returns the distinct ``(expression, column)`` pairs, ``COUNT(*) AS n`` first, and
    ``{alias: column}`` for every alias (``m{i}_sum_x`` …, named as in ``stats.MeanSummary`` /
    ``stats.RatioSummary`` / ``stats.RatioCovariate`` after the ``m{i}_`` prefix): two metrics
    may share a per-unit value, and a binomial value is 0 or 1, so its Σx² is its Σx.
    """
    aggs: list[tuple[str, str]] = [("COUNT(*)", "n")]  # (expression, alias)
    for i, m in enumerate(metrics):
        if m.type == "ratio":
            num, den = values[(m.key, "num", False)], values[(m.key, "den", False)]
            aggs += [
                (f"SUM({num})", f"m{i}_sum_num"),
                (f"SUM({den})", f"m{i}_sum_den"),
                (f"SUM({num} * {num})", f"m{i}_sum_num2"),
                (f"SUM({den} * {den})", f"m{i}_sum_den2"),
                (f"SUM({num} * {den})", f"m{i}_sum_num_den"),
            ]
            num_pre, den_pre = values.get((m.key, "num", True)), values.get((m.key, "den", True))
            if num_pre is not None and den_pre is not None:  # CUPED for ratios
                aggs += [
                    (f"SUM({num_pre})", f"m{i}_pre_sum_num"),
                    (f"SUM({den_pre})", f"m{i}_pre_sum_den"),
                    (f"SUM({num_pre} * {num_pre})", f"m{i}_pre_sum_num2"),
                    (f"SUM({den_pre} * {den_pre})", f"m{i}_pre_sum_den2"),
                    (f"SUM({num_pre} * {den_pre})", f"m{i}_pre_sum_num_den"),
                    (f"SUM({num} * {num_pre})", f"m{i}_pre_sum_num_x_num_pre"),
                    (f"SUM({num} * {den_pre})", f"m{i}_pre_sum_num_x_den_pre"),
                    (f"SUM({den} * {num_pre})", f"m{i}_pre_sum_den_x_num_pre"),
                    (f"SUM({den} * {den_pre})", f"m{i}_pre_sum_den_x_den_pre"),
                ]
            continue
        x = values[(m.key, "x", False)]
        x2 = x if m.type == "binomial" else f"{x} * {x}"
        aggs += [(f"SUM({x})", f"m{i}_sum_x"), (f"SUM({x2})", f"m{i}_sum_x2")]
        pre = values.get((m.key, "x", True))
        if pre is not None:
            pre2 = pre if m.type == "binomial" else f"{pre} * {pre}"
            aggs += [
                (f"SUM({pre})", f"m{i}_sum_pre"),
                (f"SUM({pre2})", f"m{i}_sum_pre2"),
                (f"SUM({x} * {pre})", f"m{i}_sum_x_pre"),
            ]
    alias_of: dict[str, str] = {}
    unique: dict[str, str] = {}
    for expr, alias in aggs:
        alias_of[alias] = unique.setdefault(expr, alias)
    return list(unique.items()), alias_of


def metric_sums_of(
    metrics: Sequence[MetricSpec], alias_of: dict[str, str], n: int, column: Any
) -> dict[str, MetricSums]:
    """One result row of :func:`sum_terms`' aggregates as ``{metric key: MetricSums}``;
    ``column(name)`` reads a column of the row. NULL (some engines' answer for a NaN sum, inf −
    inf after an overflow; n > 0, so never an empty sum) reads as NaN."""
    out: dict[str, MetricSums] = {}
    for i, m in enumerate(metrics):
        prefix = f"m{i}_"
        sums: dict[str, float] = {}
        for alias, col in alias_of.items():
            if alias.startswith(prefix):
                value = column(col)
                sums[alias.removeprefix(prefix)] = math.nan if value is None else float(value)
        out[m.key] = MetricSums(n, sums)
    return out


# ------------------------------------------------------------------------------------ SQL pieces


Cuts = dict[tuple[str, str], tuple[float | None, float | None]]


@dataclass(frozen=True)
class CutWanted:
    """One winsorization cut point to read: the order statistics ``offset + 1`` and ``offset +
    2`` (1-based) of a per-unit value pooled over all arms, interpolated at ``h = p (n − 1)``."""

    part: tuple[str, str]  # (metric key, part suffix)
    side: str  # low | high
    h: float
    column: str  # the per-unit value's column

    @property
    def offset(self) -> int:
        return math.floor(self.h)


def cuts_wanted(
    columns: Sequence[tuple[MetricSpec, str, str, bool]], n_units: int
) -> list[CutWanted]:
    """The cut points of the winsorized metrics among the per-unit ``columns`` (metric, column,
    part, is pre-period): the pre-period value is capped at its metric's cut points."""
    out: list[CutWanted] = []
    for m, col, suffix, is_pre in columns:
        if is_pre or not m.winsorized:
            continue
        for side, p in (("low", m.winsorize_lower), ("high", m.winsorize_upper)):
            if p is not None:
                out.append(CutWanted((m.key, suffix), side, p * (n_units - 1), col))
    return out


def cut_points(wanted: Sequence[CutWanted], values: dict[int, list[float]]) -> Cuts:
    """The cut points from the order statistics read for each ``wanted[k]`` (``values[k]``, the
    one or two around it): numpy's linear interpolation, :func:`percentile_linear`."""
    cuts: Cuts = {}
    for k, w in enumerate(wanted):
        got = sorted(values.get(k, []))
        if not got:
            continue
        cut = percentile_linear(got[0], got[1] if len(got) > 1 else None, w.h)
        low, high = cuts.get(w.part, (None, None))
        cuts[w.part] = (cut, high) if w.side == "low" else (low, cut)
    return cuts
