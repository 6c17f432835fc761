"""SQL that turns raw events into per-variant sufficient statistics (SQLite and PostgreSQL).

One statement does the whole aggregation; Python only reads one row per variant.

1. ``v``: one row per analysed unit of the current phase, from ``exposure_unit`` (units exposed
   to more than one variant, ``multiple``, and units with a forced override are excluded) ``LEFT
   JOIN conversion`` on the unit, the metrics' event names and the unit's window: ``first_ts``
   (inclusive) to ``first_ts + attribution_window`` (exclusive, when set), the stop time
   (inclusive, when stopped) and, for CUPED, the pre-period ``[first_ts - pre_period_days,
   first_ts)``; grouped by unit, one column per metric value (binomial: 1 if ≥1 event, mean:
   Σvalue or the count, ratio: Σnumerator and Σdenominator values) and its pre-period twin. A
   unit without events counts 0.
2. Per variant, over ``v`` with values capped at the winsorization cut points when the metric
   asks for it: n, Σx, Σx², Σpre, Σpre², Σx·pre (ratio: Σnum, Σden, Σnum², Σden², Σnum·den).

Index: migration 0003 adds the covering index ``conversion (unit_id, ts, name, value)`` so that
each unit's events in its window are one index range read (no table lookups).

Winsorization cut points are *pooled over all arms* (as GrowthBook caps a metric), from the
per-unit values of the analysed units (zeros included): percentile ``p`` is numpy's default
(linear, Hyndman & Fan type 7) ``x[⌊h⌋] + (h − ⌊h⌋)(x[⌊h⌋+1] − x[⌊h⌋])`` with ``h = p(n − 1)``. The
database returns only the two order statistics around each cut point (``ORDER BY … LIMIT 2 OFFSET
⌊h⌋``); the interpolation is one line of Python. The pre-period value of a metric is capped at the
same cut points as the metric; a ratio metric caps numerator and denominator at their own cut
points. Binomial metrics (0/1) are never capped.

Timestamps: on SQLite ``UTCDateTime`` columns hold ``'YYYY-MM-DD HH:MM:SS.ffffff'`` text, which
orders like time, so window bounds are built as text of the same shape with exact integer
arithmetic on seconds and microseconds; on PostgreSQL they are ``timestamptz`` ± an interval in
microseconds (absolute time, no calendar or DST arithmetic).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.sql.elements import TextClause
from sqlmodel import Session

from service.db import UTCDateTime

__all__ = [
    "ExposureCounts",
    "MetricSpec",
    "MetricSums",
    "Window",
    "count_exposures",
    "percentile_linear",
    "variant_sums",
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


# ------------------------------------------------------------------------------------ SQL pieces


def _bounds_sql(dialect: str, window: Window) -> tuple[str, str | None]:
    """SQL expressions (over ``eu.first_ts``) for the lowest event time read and the window end."""
    if dialect == "postgresql":
        lo = "eu.first_ts"
        if window.pre_period_days is not None:
            lo = "eu.first_ts - CAST(:pre_seconds AS bigint) * INTERVAL '1 second'"
        hi = None
        if window.attribution_window_hours is not None:
            hi = "eu.first_ts + CAST(:window_us AS bigint) * INTERVAL '1 microsecond'"
        return lo, hi
    # SQLite: text 'YYYY-MM-DD HH:MM:SS.ffffff'; shift the seconds part with datetime() and carry
    # the microseconds by hand so the bound stays exact.
    micros = "CAST(substr(eu.first_ts, 21, 6) AS INTEGER)"
    lo = "eu.first_ts"
    if window.pre_period_days is not None:
        lo = (
            "(datetime(substr(eu.first_ts, 1, 19), '-' || :pre_seconds || ' seconds')"
            " || substr(eu.first_ts, 20))"
        )
    hi = None
    if window.attribution_window_hours is not None:
        hi = (
            f"(datetime(substr(eu.first_ts, 1, 19), '+' || (:window_s + ({micros} + :window_rem_us)"
            f" / {MICROS_PER_SECOND}) || ' seconds')"
            f" || printf('.%06d', ({micros} + :window_rem_us) % {MICROS_PER_SECOND}))"
        )
    return lo, hi


def _per_unit_sql(
    dialect: str, metrics: Sequence[MetricSpec], window: Window
) -> tuple[str, dict[str, Any], list[Any], list[tuple[MetricSpec, str, str, bool]]]:
    """The CTE ``v``: one row per analysed unit with its variant and (uncapped) metric values.

    Returns the SQL, its parameters, its expanding/typed binds and the value columns of ``v``:
    (metric, column name, part suffix, is pre-period).

    One ``LEFT JOIN`` of the unit's exposure row with its conversions in the window, grouped by
    the primary key of ``exposure_unit`` (SQLite reads the units in that index order, so the
    grouping needs no sort; PostgreSQL may hash). A unit without events gets 0 from the ``ELSE``
    branches, since ``c.name`` is NULL.
    """
    lo, hi = _bounds_sql(dialect, window)
    params: dict[str, Any] = {"experiment_id": window.experiment_id, "phase": window.phase}
    binds: list[Any] = []
    if window.pre_period_days is not None:
        params["pre_seconds"] = int(window.pre_period_days) * 86_400
    if window.attribution_window_hours is not None:
        window_us = round(window.attribution_window_hours * 3600 * MICROS_PER_SECOND)
        params["window_us"] = window_us
        params["window_s"], params["window_rem_us"] = divmod(window_us, MICROS_PER_SECOND)
    where = "eu.experiment_id = :experiment_id AND eu.phase = :phase AND NOT eu.multiple"
    if window.overrides:
        where += " AND eu.unit_id NOT IN :overrides"
        params["overrides"] = list(window.overrides)
        binds.append(bindparam("overrides", expanding=True))
    names: list[str] = []
    agg_cols: list[str] = []
    columns: list[tuple[MetricSpec, str, str, bool]] = []
    for i, m in enumerate(metrics):
        for suffix, event in m.parts:
            if event not in names:
                names.append(event)
            p = f"ev{names.index(event)}"
            params[p] = event
            if m.type == "binomial":
                post = f"MAX(CASE WHEN c.name = :{p} AND c.ts >= eu.first_ts THEN 1 ELSE 0 END)"
                pre = f"MAX(CASE WHEN c.name = :{p} AND c.ts < eu.first_ts THEN 1 ELSE 0 END)"
            else:
                what = "1" if m.aggregation == "count" else "c.value"
                post = (
                    f"SUM(CASE WHEN c.name = :{p} AND c.ts >= eu.first_ts THEN {what} ELSE 0 END)"
                )
                pre = f"SUM(CASE WHEN c.name = :{p} AND c.ts < eu.first_ts THEN {what} ELSE 0 END)"
            col = f"m{i}_{suffix}"
            agg_cols.append(f"{post} AS {col}")
            columns.append((m, col, suffix, False))
            if window.pre_period_days is not None and m.type != "ratio":
                agg_cols.append(f"{pre} AS {col}_pre")
                columns.append((m, f"{col}_pre", suffix, True))
    params["names"] = names
    binds.append(bindparam("names", expanding=True))
    join = f"c.unit_id = eu.unit_id AND c.name IN :names AND c.ts >= {lo}"
    if hi is not None:
        join += f" AND c.ts < {hi}"
    if window.stopped_at is not None:
        join += " AND c.ts <= :stopped_at"
        params["stopped_at"] = window.stopped_at
        binds.append(bindparam("stopped_at", type_=UTCDateTime()))
    values = (
        f"v AS (SELECT eu.variant, {', '.join(agg_cols)}"
        f" FROM exposure_unit eu LEFT JOIN conversion c ON {join} WHERE {where}"
        " GROUP BY eu.experiment_id, eu.phase, eu.unit_id, eu.variant)"
    )
    return f"WITH {values}", params, binds, columns


def _statement(sql: str, binds: list[Any]) -> TextClause:
    stmt = text(sql)
    return stmt.bindparams(*binds) if binds else stmt


# ---------------------------------------------------------------------------------------- queries


def count_exposures(session: Session, window: Window) -> ExposureCounts:
    """Units per variant after the exclusions, and how many were excluded (one GROUP BY)."""
    params: dict[str, Any] = {"experiment_id": window.experiment_id, "phase": window.phase}
    binds: list[Any] = []
    overridden = "0"
    if window.overrides:
        overridden = "CASE WHEN eu.unit_id IN :overrides THEN 1 ELSE 0 END"
        params["overrides"] = list(window.overrides)
        binds.append(bindparam("overrides", expanding=True))
    sql = (
        "SELECT eu.variant, COUNT(*) AS total,"
        " SUM(CASE WHEN eu.multiple THEN 1 ELSE 0 END) AS multiple,"
        f" SUM({overridden}) AS overridden,"
        f" SUM(CASE WHEN eu.multiple OR {overridden} = 1 THEN 0 ELSE 1 END) AS analysed"
        " FROM exposure_unit eu WHERE eu.experiment_id = :experiment_id AND eu.phase = :phase"
        " GROUP BY eu.variant"
    )
    rows = session.connection().execute(_statement(sql, binds), params).all()
    return ExposureCounts(
        units={str(r.variant): int(r.analysed) for r in rows},
        multiple_exposures=sum(int(r.multiple) for r in rows),
        overridden_units=sum(int(r.overridden) for r in rows),
    )


def _cut_points(
    session: Session,
    dialect: str,
    metrics: Sequence[MetricSpec],
    window: Window,
    n_units: int,
) -> dict[str, tuple[float | None, float | None]]:
    """Pooled winsorization cut points per value column (``m{i}_{part}``): (low, high)."""
    wanted = [m for m in metrics if m.winsorized]
    if not wanted or n_units == 0:
        return {}
    head, params, binds, columns = _per_unit_sql(dialect, wanted, window)
    selects: list[str] = []
    plan: list[tuple[str, str, float]] = []  # (column, side, h)
    for m, col, _suffix, is_pre in columns:
        if is_pre:
            continue
        for side, p in (("low", m.winsorize_lower), ("high", m.winsorize_upper)):
            if p is None:
                continue
            h = p * (n_units - 1)
            k = len(plan)
            params[f"off{k}"] = math.floor(h)
            selects.append(
                f"SELECT * FROM (SELECT {k} AS k, {col} AS x FROM v ORDER BY {col}"
                f" LIMIT 2 OFFSET :off{k}) s{k}"
            )
            plan.append((col, side, h))
    sql = head + " " + " UNION ALL ".join(selects)
    got: dict[int, list[float]] = {}
    for row in session.connection().execute(_statement(sql, binds), params):
        got.setdefault(int(row.k), []).append(float(row.x))
    # _per_unit_sql numbered the winsorized metrics among themselves: map back to the full list.
    rename = {f"m{i}_": f"m{metrics.index(m)}_" for i, m in enumerate(wanted)}
    cuts: dict[str, tuple[float | None, float | None]] = {}
    for k, (col, side, h) in enumerate(plan):
        values = sorted(got.get(k, []))
        if not values:
            continue
        cut = percentile_linear(values[0], values[1] if len(values) > 1 else None, h)
        prefix, _, suffix = col.partition("_")
        full = rename[prefix + "_"] + suffix
        low, high = cuts.get(full, (None, None))
        cuts[full] = (cut, high) if side == "low" else (low, cut)
    return cuts


def _capped(
    expr: str, cut: tuple[float | None, float | None] | None, key: str
) -> tuple[str, dict[str, float]]:
    if cut is None:
        return expr, {}
    low, high = cut
    out, params = expr, {}
    if low is not None:
        params[f"{key}_lo"] = low
        out = f"CASE WHEN {out} < :{key}_lo THEN :{key}_lo ELSE {out} END"
    if high is not None:
        params[f"{key}_hi"] = high
        out = f"CASE WHEN {out} > :{key}_hi THEN :{key}_hi ELSE {out} END"
    return f"({out})", params


def variant_sums(
    session: Session, metrics: Sequence[MetricSpec], window: Window, n_units: int
) -> dict[str, dict[str, MetricSums]]:
    """Sufficient statistics: ``{metric key: {variant: MetricSums}}`` for every variant with units.

    ``n_units`` (analysed units, all arms) sizes the winsorization offsets.
    """
    if not metrics:
        return {}
    dialect = session.get_bind().dialect.name
    cuts = _cut_points(session, dialect, metrics, window, n_units)
    head, params, binds, columns = _per_unit_sql(dialect, metrics, window)
    values: dict[str, str] = {}
    for m, col, _suffix, _is_pre in columns:
        base = col.removesuffix("_pre")
        capped, cut_params = _capped(f"v.{col}", cuts.get(base) if m.winsorized else None, col)
        params.update(cut_params)
        values[col] = capped
    aggs: list[str] = ["COUNT(*) AS n"]
    for i, m in enumerate(metrics):
        if m.type == "ratio":
            num, den = values[f"m{i}_num"], values[f"m{i}_den"]
            aggs += [
                f"SUM({num}) AS m{i}_sum_num",
                f"SUM({den}) AS m{i}_sum_den",
                f"SUM({num} * {num}) AS m{i}_sum_num2",
                f"SUM({den} * {den}) AS m{i}_sum_den2",
                f"SUM({num} * {den}) AS m{i}_sum_num_den",
            ]
            continue
        x = values[f"m{i}_x"]
        aggs += [f"SUM({x}) AS m{i}_sum_x", f"SUM({x} * {x}) AS m{i}_sum_x2"]
        pre = values.get(f"m{i}_x_pre")
        if pre is not None:
            aggs += [
                f"SUM({pre}) AS m{i}_sum_pre",
                f"SUM({pre} * {pre}) AS m{i}_sum_pre2",
                f"SUM({x} * {pre}) AS m{i}_sum_x_pre",
            ]
    sql = f"{head} SELECT v.variant, {', '.join(aggs)} FROM v GROUP BY v.variant"
    out: dict[str, dict[str, MetricSums]] = {m.key: {} for m in metrics}
    for row in session.connection().execute(_statement(sql, binds), params).mappings():
        variant = str(row["variant"])
        n = int(row["n"])
        for i, m in enumerate(metrics):
            prefix = f"m{i}_"
            sums = {
                name.removeprefix(prefix): float(value or 0)
                for name, value in row.items()
                if name.startswith(prefix)
            }
            out[m.key][variant] = MetricSums(n, sums)
    return out
