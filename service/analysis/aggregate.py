"""SQL that turns raw events into per-variant sufficient statistics (SQLite and PostgreSQL).

One statement does the whole aggregation (on SQLite, one per variant); Python only reads one row
per variant (and, for a winsorized metric, two order statistics per cut point).

1. ``v``: one row per analysed unit of the current phase, from ``exposure_unit`` (units exposed
   to more than one variant, ``multiple``, and units with a forced override are excluded) ``LEFT
   JOIN conversion`` on the unit and the unit's window (each value's ``FILTER`` picks its event
   name; PostgreSQL also filters the join on the metrics' names): ``first_ts``
   (inclusive) to ``first_ts + attribution_window`` (exclusive, when set), the stop time
   (inclusive, when stopped) and, for CUPED, the pre-period ``[first_ts - pre_period_days,
   first_ts)``; grouped by unit, one column per metric value (binomial: 1 if ≥1 event, mean:
   Σvalue or the count, ratio: Σnumerator and Σdenominator values) and its pre-period twin. A
   unit without events counts 0.
2. Per variant, over ``v`` with values capped at the winsorization cut points when the metric
   asks for it: n, Σx, Σx², Σpre, Σpre², Σx·pre (ratio: Σnum, Σden, Σnum², Σden², Σnum·den and,
   for CUPED, the pre-period twins of numerator and denominator with their squares and cross
   products with the window's values, ``pre_sum_*`` as in ``stats.RatioCovariate``).

Index: migration 0003 adds the covering index ``conversion (unit_id, ts, name, value)`` so that
each unit's events in its window are one index range read (no table lookups).

Speed (``bench/results.py``; issue 7): the plan must stream. Both sides are read in ``unit_id``
order (the primary key of ``exposure_unit``, the covering index), so the per-unit grouping needs
no sort and no hash table, whatever the size. Per event only ``FILTER``-ed aggregates run (one
per distinct per-unit value; no ``CASE`` per metric and row), and the window bounds are computed
once per unit (SQLite: one ``datetime()`` per bound with a modifier built once). On SQLite the
statement runs once per variant over the index ``exposure_unit (experiment_id, phase, variant,
unit_id, first_ts, multiple)`` (migration 0005): no sort of every unit for the per-variant
``GROUP BY`` (SQLite has no hash aggregate). On PostgreSQL the statement runs with transaction-local
planner settings (no hash join, no JIT) and, for a large experiment, the units are split into
ranges of ``unit_id`` aggregated side by side (Parallel Append) and summed.

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

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import bindparam, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import TextClause
from sqlmodel import Session

from service.db import UTCDateTime

__all__ = [
    "Aggregator",
    "CutWanted",
    "Cuts",
    "ExposureCounts",
    "MetricSpec",
    "MetricSums",
    "SliceOrderStatistics",
    "SliceRanks",
    "StoreAggregator",
    "Window",
    "count_exposures",
    "cut_points",
    "cuts_wanted",
    "kind_of",
    "metric_sums_of",
    "percentile_linear",
    "quantile_order_statistics",
    "slice_counts",
    "slice_order_statistics",
    "slice_sums",
    "sum_terms",
    "variant_sums",
]

MICROS_PER_SECOND = 1_000_000
NUMERIC_OUT_OF_RANGE = "22003"  # PostgreSQL SQLSTATE of a float8 overflow


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


@dataclass
class _Bounds:
    """Window bounds: SQL expressions over ``eu.first_ts``."""

    lo: str  # lowest event time read (inclusive)
    hi: str | None = None  # window end (exclusive)


def _bounds_sql(dialect: str, window: Window, params: dict[str, Any]) -> _Bounds:
    """SQL expressions (over ``eu.first_ts``) for the lowest event time read and the window end.

    Evaluated once per unit: they are the bounds of the unit's index range read. Fills ``params``.
    """
    window_us: int | None = None
    if window.attribution_window_hours is not None:
        window_us = round(window.attribution_window_hours * 3600 * MICROS_PER_SECOND)
    if dialect == "postgresql":
        b = _Bounds("eu.first_ts")
        if window.pre_period_days is not None:
            params["pre_seconds"] = int(window.pre_period_days) * 86_400
            b.lo = "eu.first_ts - CAST(:pre_seconds AS bigint) * INTERVAL '1 second'"
        if window_us is not None:
            params["window_us"] = window_us
            b.hi = "eu.first_ts + CAST(:window_us AS bigint) * INTERVAL '1 microsecond'"
        return b
    # SQLite: text 'YYYY-MM-DD HH:MM:SS.ffffff'. datetime() shifts the whole seconds (its output
    # has no fraction) and the fraction is carried by hand, so the bound stays exact. The modifier
    # ('+259200 seconds') is a parameter built once, not text concatenated per unit.
    b = _Bounds("eu.first_ts")
    if window.pre_period_days is not None:
        params["pre_mod"] = f"-{int(window.pre_period_days) * 86_400} seconds"
        b.lo = "(datetime(substr(eu.first_ts, 1, 19), :pre_mod) || substr(eu.first_ts, 20))"
    if window_us is not None:
        window_s, rem_us = divmod(window_us, MICROS_PER_SECOND)
        if rem_us == 0:  # a whole number of seconds (the usual case): the fraction is unchanged
            params["window_mod"] = f"+{window_s} seconds"
            b.hi = "(datetime(substr(eu.first_ts, 1, 19), :window_mod) || substr(eu.first_ts, 20))"
        else:
            params["window_s"], params["window_rem_us"] = window_s, rem_us
            micros = "CAST(substr(eu.first_ts, 21, 6) AS INTEGER)"
            b.hi = (
                f"(datetime(substr(eu.first_ts, 1, 19), '+' || (:window_s + ({micros}"
                f" + :window_rem_us) / {MICROS_PER_SECOND}) || ' seconds')"
                f" || printf('.%06d', ({micros} + :window_rem_us) % {MICROS_PER_SECOND}))"
            )
    return b


def _cut_sql(window: Window, params: dict[str, Any], binds: list[Any]) -> str:
    """``AND eu.first_ts < :until`` for a time cut, else nothing. Fills ``params``/``binds``."""
    if window.until is None:
        return ""
    params["until"] = window.until
    binds.append(bindparam("until", type_=UTCDateTime()))
    return " AND eu.first_ts < :until"


def _attribute_sql(dialect: str, name: str, k: int, params: dict[str, Any]) -> str:
    """The raw value (text or NULL) of attribute ``name`` stored with the unit's first exposure
    (``exposure_unit.attributes``, a JSON object of strings)."""
    if dialect == "postgresql":
        params[f"dim{k}"] = name
        return f"(CAST(eu.attributes AS jsonb) ->> CAST(:dim{k} AS text))"
    params[f"dim{k}"] = '$."' + name.replace('"', '\\"') + '"'
    return f"json_extract(eu.attributes, :dim{k})"


def _bucket_sql(
    dialect: str,
    name: str,
    kept: Sequence[str],
    k: int,
    params: dict[str, Any],
    binds: list[Any],
) -> str:
    """Attribute ``name``'s value bucketed into the ``kept`` values, ``other`` and ``unknown``
    (parameters named after ``k``)."""
    raw = _attribute_sql(dialect, name, k, params)
    if not kept:
        return f"CASE WHEN {raw} IS NULL THEN '{UNKNOWN}' ELSE '{OTHER}' END"
    params[f"dim{k}_values"] = list(kept)
    binds.append(bindparam(f"dim{k}_values", expanding=True))
    return (
        f"CASE WHEN {raw} IS NULL THEN '{UNKNOWN}' WHEN {raw} IN :dim{k}_values"
        f" THEN {raw} ELSE '{OTHER}' END"
    )


def _slice_columns(dialect: str, window: Window, params: dict[str, Any], binds: list[Any]) -> str:
    """``, <bucket> AS sv0, ...``: each dimension's value bucketed into the kept values,
    ``other`` and ``unknown``."""
    out = ""
    for k, (name, kept) in enumerate(window.dimensions):
        out += f", {_bucket_sql(dialect, name, kept, k, params, binds)} AS sv{k}"
    return out


def _value_sql(kind: str, event_param: str, pre: bool, dialect: str, exact: bool = False) -> str:
    """Per-unit aggregate of one event in the window (``post``) or the pre-period (``pre``).

    ``FILTER`` (SQLite >= 3.30, PostgreSQL) evaluates the condition per event and calls the
    aggregate only for the matching rows. Every value is non-NULL (a unit without events is 0) and,
    on PostgreSQL, double precision so that the per-variant sums stay in floating point (a sum of
    bigint would be numeric, ten times slower); counts are exact in a double below 2**53.
    ``exact`` (PostgreSQL, after an overflow): numeric instead, which cannot overflow.
    """
    when = f"c.name = :{event_param} AND c.ts {'<' if pre else '>='} eu.first_ts"
    if kind == "any":
        return f"COALESCE(MAX(1) FILTER (WHERE {when}), 0)"
    if kind == "count":
        count = f"COUNT(*) FILTER (WHERE {when})"
        cast = "numeric" if exact else "DOUBLE PRECISION"
        return f"CAST({count} AS {cast})" if dialect == "postgresql" else count
    value = "CAST(c.value AS numeric)" if exact else "c.value"
    return f"COALESCE(SUM({value}) FILTER (WHERE {when}), 0)"


def _per_unit_sql(
    dialect: str,
    metrics: Sequence[MetricSpec],
    window: Window,
    unit_range: str = "",
    exact: bool = False,
) -> tuple[str, dict[str, Any], list[Any], list[tuple[MetricSpec, str, str, bool]]]:
    """The CTE ``v``: one row per analysed unit with its variant and (uncapped) metric values.

    Returns the SQL, its parameters, its expanding/typed binds and the value columns of ``v``:
    (metric, column name, part suffix, is pre-period).

    One ``LEFT JOIN`` of the unit's exposure row with its conversions in the window, grouped by
    the primary key of ``exposure_unit``: both sides are read in ``unit_id`` order (the primary key
    and the covering index ``(unit_id, ts, name, value)``), so the grouping streams without a sort
    or a hash table. A unit without events gets 0. Two metrics reading the same event the same way
    (e.g. ``Σ value`` of ``purchase``) share one per-unit column.
    """
    params: dict[str, Any] = {"experiment_id": window.experiment_id, "phase": window.phase}
    bounds = _bounds_sql(dialect, window, params)
    binds: list[Any] = []
    where = "eu.experiment_id = :experiment_id AND eu.phase = :phase AND NOT eu.multiple"
    if unit_range:
        where += f" AND {unit_range}"
    where += _cut_sql(window, params, binds)
    if window.overrides:
        where += " AND eu.unit_id NOT IN :overrides"
        params["overrides"] = list(window.overrides)
        binds.append(bindparam("overrides", expanding=True))
    if window.also_in is not None:
        where += (
            " AND EXISTS (SELECT 1 FROM exposure_unit eo WHERE eo.experiment_id = :also_exp"
            " AND eo.phase = :also_phase AND eo.variant = :also_variant"
            " AND eo.unit_id = eu.unit_id AND NOT eo.multiple)"
        )
        params["also_exp"], params["also_phase"], params["also_variant"] = window.also_in
    names: list[str] = []
    agg_cols: dict[str, str] = {}  # SQL expression -> column name in v (one column per distinct)
    columns: list[tuple[MetricSpec, str, str, bool]] = []
    periods = (False, True) if window.pre_period_days is not None else (False,)
    for m in metrics:
        for suffix, event in m.parts:
            if event not in names:
                names.append(event)
            p = f"ev{names.index(event)}"
            params[p] = event
            for pre in periods:
                expr = _value_sql(kind_of(m), p, pre, dialect, exact)
                col = agg_cols.setdefault(expr, f"u{len(agg_cols)}")
                columns.append((m, col, suffix, pre))
    if dialect != "sqlite":
        params["names"] = names
        binds.append(bindparam("names", expanding=True))
    # SQLite: no event-name condition in the join, so that the planner reads the unit's range of
    # (unit_id, ts, name, value) rather than seeking once per name in (name, unit_id, ts), and
    # because the FILTER of every value checks the name anyway (an IN test per event costs more
    # than it saves). PostgreSQL filters the index scan on the names.
    join = f"c.unit_id = eu.unit_id AND c.ts >= {bounds.lo}"
    if dialect != "sqlite":
        join += " AND c.name IN :names"
    if bounds.hi is not None:
        join += f" AND c.ts < {bounds.hi}"
    if window.stopped_at is not None:
        join += " AND c.ts <= :stopped_at"
        params["stopped_at"] = window.stopped_at
        binds.append(bindparam("stopped_at", type_=UTCDateTime()))
    if window.until is not None:
        join += " AND c.ts < :until"
    selected = ", ".join(f"{expr} AS {col}" for expr, col in agg_cols.items())
    slice_col = _slice_columns(dialect, window, params, binds)
    values = (
        f"v AS (SELECT eu.variant{slice_col}, {selected}"
        f" FROM exposure_unit eu LEFT JOIN conversion c ON {join} WHERE {where}"
        " GROUP BY eu.experiment_id, eu.phase, eu.unit_id, eu.variant)"
    )
    return f"WITH {values}", params, binds, columns


def _statement(sql: str, binds: list[Any]) -> TextClause:
    stmt = text(sql)
    return stmt.bindparams(*binds) if binds else stmt


# PostgreSQL planner settings for the per-unit aggregation, local to the transaction. A hash join
# of all conversions against all units spills to disk in batches and leaves the per-unit grouping
# to a sort that spills again (the 21x growth from 100k to 1M units); without it the planner
# streams both indexes in ``unit_id`` order (index range reads per unit, or a merge join) into a
# group aggregate. JIT compilation costs more than it saves on these expressions.
_PG_SETTINGS = {"enable_hashjoin": "off", "jit": "off"}
# The partitioned statement (see ``variant_sums``): no partial (block-parallel) scans, so that
# the planner runs whole partitions side by side under one Gather (Parallel Append) instead of a
# Gather per partition, whose leader would merge and finalize every unit's partial aggregate.
_PG_PARTITIONED = _PG_SETTINGS | {
    "min_parallel_table_scan_size": "1TB",
    "min_parallel_index_scan_size": "1TB",
}
# PostgreSQL: above this many analysed units the units are split into PG_PARTITIONS ranges of
# unit_id aggregated independently (in parallel workers when the server allows them).
PG_PARTITION_MIN_UNITS = 200_000
PG_PARTITIONS = 6


def _execute(
    session: Session,
    dialect: str,
    stmt: TextClause,
    params: dict[str, Any],
    settings: dict[str, str] | None = None,
) -> Any:
    """Run the aggregation with PostgreSQL ``settings`` (default :data:`_PG_SETTINGS`), restored
    afterwards."""
    conn = session.connection()
    if dialect != "postgresql":
        return conn.execute(stmt, params).all()
    settings = _PG_SETTINGS if settings is None else settings
    names = list(settings)
    old = [conn.execute(text("SELECT current_setting(:n)"), {"n": n}).scalar_one() for n in names]
    setting = text("SELECT set_config(:n, :v, true)")
    for n in names:
        conn.execute(setting, {"n": n, "v": settings[n]})
    # On an error the transaction (or the savepoint of ``variant_sums``) is rolled back, and the
    # settings with it: nothing to restore, and nothing could run in the failed transaction.
    rows = conn.execute(stmt, params).all()
    for n, v in zip(names, old, strict=True):
        conn.execute(setting, {"n": n, "v": v})
    return rows


def _unit_quantiles(session: Session, window: Window, n_units: int, parts: int) -> list[str]:
    """Up to ``parts - 1`` unit ids splitting the phase's units into ranges of about equal size.

    Each bound is found by skipping ``n_units / parts`` entries of the primary key after the
    previous bound, so the key is read once in all (any split is correct, an even one faster).
    """
    sql = (
        "WITH RECURSIVE b(k, u) AS (SELECT 0, CAST('' AS text) UNION ALL"
        " SELECT b.k + 1, (SELECT eu.unit_id FROM exposure_unit eu"
        " WHERE eu.experiment_id = :experiment_id AND eu.phase = :phase AND eu.unit_id > b.u"
        " ORDER BY eu.unit_id OFFSET :skip LIMIT 1) FROM b WHERE b.k < :most AND b.u IS NOT NULL)"
        " SELECT b.u FROM b WHERE b.k > 0 AND b.u IS NOT NULL ORDER BY b.k"
    )
    params = {
        "experiment_id": window.experiment_id,
        "phase": window.phase,
        "skip": max(0, n_units // parts - 1),
        "most": parts - 1,
    }
    return [str(r.u) for r in session.connection().execute(text(sql), params)]


# ---------------------------------------------------------------------------------------- queries


def count_exposures(session: Session, window: Window) -> ExposureCounts:
    """Units per variant after the exclusions, and how many were excluded (one GROUP BY).

    On SQLite the units are read in variant order from the index of migration 0005 (the grouping
    streams, no sort); PostgreSQL hashes the few variants.
    """
    params: dict[str, Any] = {"experiment_id": window.experiment_id, "phase": window.phase}
    binds: list[Any] = []
    overridden = "0"
    if window.overrides:
        overridden = "CASE WHEN eu.unit_id IN :overrides THEN 1 ELSE 0 END"
        params["overrides"] = list(window.overrides)
        binds.append(bindparam("overrides", expanding=True))
    cut = _cut_sql(window, params, binds)
    sql = (
        "SELECT eu.variant, COUNT(*) AS total,"
        " SUM(CASE WHEN eu.multiple THEN 1 ELSE 0 END) AS multiple,"
        f" SUM({overridden}) AS overridden,"
        f" SUM(CASE WHEN eu.multiple OR {overridden} = 1 THEN 0 ELSE 1 END) AS analysed"
        " FROM exposure_unit eu WHERE eu.experiment_id = :experiment_id AND eu.phase = :phase"
        f"{cut} GROUP BY eu.variant"
    )
    rows = session.connection().execute(_statement(sql, binds), params).all()
    return ExposureCounts(
        units={str(r.variant): int(r.analysed) for r in rows},
        multiple_exposures=sum(int(r.multiple) for r in rows),
        overridden_units=sum(int(r.overridden) for r in rows),
    )


def slice_counts(session: Session, window: Window, dimension: str) -> dict[str | None, int]:
    """Analysed units per raw value of attribute ``dimension`` (None: the unit has no value)."""
    dialect = session.get_bind().dialect.name
    params: dict[str, Any] = {"experiment_id": window.experiment_id, "phase": window.phase}
    binds: list[Any] = []
    raw = _attribute_sql(dialect, dimension, 0, params)
    where = "eu.experiment_id = :experiment_id AND eu.phase = :phase AND NOT eu.multiple"
    where += _cut_sql(window, params, binds)
    if window.overrides:
        where += " AND eu.unit_id NOT IN :overrides"
        params["overrides"] = list(window.overrides)
        binds.append(bindparam("overrides", expanding=True))
    sql = f"SELECT {raw} AS value, COUNT(*) AS n FROM exposure_unit eu WHERE {where} GROUP BY {raw}"
    rows = session.connection().execute(_statement(sql, binds), params).all()
    return {(None if r.value is None else str(r.value)): int(r.n) for r in rows}


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


def _cut_points(
    session: Session,
    dialect: str,
    metrics: Sequence[MetricSpec],
    window: Window,
    n_units: int,
    exact: bool = False,
) -> Cuts:
    """Pooled winsorization cut points per (metric key, part suffix): (low, high)."""
    wanted = [m for m in metrics if m.winsorized]
    if not wanted or n_units == 0:
        return {}
    head, params, binds, columns = _per_unit_sql(
        dialect, wanted, replace(window, dimensions=()), exact=exact
    )
    wanted_cuts = cuts_wanted(columns, n_units)
    selects: list[str] = []
    for k, w in enumerate(wanted_cuts):
        params[f"off{k}"] = w.offset
        selects.append(
            f"SELECT * FROM (SELECT {k} AS k, {w.column} AS x FROM v ORDER BY {w.column}"
            f" LIMIT 2 OFFSET :off{k}) s{k}"
        )
    sql = head + " " + " UNION ALL ".join(selects)
    got: dict[int, list[float]] = {}
    for row in _execute(session, dialect, _statement(sql, binds), params):
        got.setdefault(int(row.k), []).append(float(row.x))
    return cut_points(wanted_cuts, got)


def _capped(
    expr: str, cut: tuple[float | None, float | None] | None, key: str, exact: bool = False
) -> tuple[str, dict[str, float]]:
    if cut is None:
        return expr, {}
    low, high = cut
    out, params = expr, {}
    # exact: compare in numeric (a numeric value compared with a double is cast to double, which
    # overflows for the values that made the exact pass necessary)
    lo, hi = (
        (f"CAST(:{key}_lo AS numeric)", f"CAST(:{key}_hi AS numeric)")
        if exact
        else (f":{key}_lo", f":{key}_hi")
    )
    if low is not None:
        params[f"{key}_lo"] = low
        out = f"CASE WHEN {out} < {lo} THEN {lo} ELSE {out} END"
    if high is not None:
        params[f"{key}_hi"] = high
        out = f"CASE WHEN {out} > {hi} THEN {hi} ELSE {out} END"
    return f"({out})", params


def _variants(session: Session, window: Window) -> list[str]:
    """The variants exposed in the phase (one read of the variant index)."""
    sql = (
        "SELECT DISTINCT eu.variant FROM exposure_unit eu"
        " WHERE eu.experiment_id = :experiment_id AND eu.phase = :phase"
    )
    params = {"experiment_id": window.experiment_id, "phase": window.phase}
    return [str(r.variant) for r in session.connection().execute(text(sql), params)]


def variant_sums(
    session: Session,
    metrics: Sequence[MetricSpec],
    window: Window,
    n_units: int,
    variants: Sequence[str] | None = None,
) -> dict[str, dict[str, MetricSums]]:
    """Sufficient statistics: ``{metric key: {variant: MetricSums}}`` (see :func:`_sums`)."""
    grouped = _sums(session, metrics, replace(window, dimensions=()), n_units, variants)
    return grouped.get((), {m.key: {} for m in metrics})


def slice_sums(
    session: Session,
    metrics: Sequence[MetricSpec],
    window: Window,
    n_units: int,
    variants: Sequence[str] | None = None,
) -> dict[tuple[str, ...], dict[str, dict[str, MetricSums]]]:
    """Sufficient statistics per combination of ``window.dimensions``' buckets: ``{(value of
    each dimension): {metric key: {variant: MetricSums}}}``, in one pass like
    :func:`variant_sums`. Winsorization cut points are those of the whole experiment, so the
    slices' sums add up to the whole (sum the combinations over the other dimensions)."""
    assert window.dimensions
    return _sums(session, metrics, window, n_units, variants)


def _sums(
    session: Session,
    metrics: Sequence[MetricSpec],
    window: Window,
    n_units: int,
    variants: Sequence[str] | None = None,
) -> dict[tuple[str, ...], dict[str, dict[str, MetricSums]]]:
    """Sufficient statistics: ``{(slice values): {metric key: {variant: MetricSums}}}`` for every
    variant with units (``()`` for the whole experiment when the window has no dimensions).

    Parameters
    ----------
    session : Session
        An open session (reads only).
    metrics : Sequence[MetricSpec]
        The metrics to aggregate.
    window : Window
        The analysis window shared by every unit.
    n_units : int
        Analysed units, all arms: sizes the winsorization offsets.
    variants : Sequence[str] or None
        Every variant that may have analysed units (``ExposureCounts.units``); read from the
        table when None. SQLite aggregates one variant at a time.

    Returns
    -------
    dict[tuple[str, ...], dict[str, dict[str, MetricSums]]]
        Per metric key and variant: n and the sums named as in ``stats.MeanSummary`` /
        ``stats.RatioSummary``. A sum that overflowed double precision is ``inf`` or NaN
        (values stored before ingestion bounded them): the engine answers it with the warning
        ``non_finite_statistics``.

    Notes
    -----
    Overflow: SQLite's floating-point sums reach ``inf`` (and NaN, read as NULL), but PostgreSQL
    raises ``value out of range: overflow`` (SQLSTATE 22003). There the statements run in a
    savepoint and, after that error only, again with every per-unit value and sum in
    ``numeric`` (exact, no overflow; about ten times slower, so never the first try); the
    sums then read as floats, ``inf`` where they exceed a double.
    """
    if not metrics:
        return {}
    dialect = session.get_bind().dialect.name
    if dialect != "postgresql":
        return _variant_sums(session, dialect, metrics, window, n_units, variants)
    try:
        with session.connection().begin_nested():
            return _variant_sums(session, dialect, metrics, window, n_units, variants)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != NUMERIC_OUT_OF_RANGE:
            raise
    return _variant_sums(session, dialect, metrics, window, n_units, variants, exact=True)


def _variant_sums(
    session: Session,
    dialect: str,
    metrics: Sequence[MetricSpec],
    window: Window,
    n_units: int,
    variants: Sequence[str] | None,
    exact: bool = False,
) -> dict[tuple[str, ...], dict[str, dict[str, MetricSums]]]:
    """:func:`_sums` in double precision, or in numeric when ``exact``."""
    cuts = _cut_points(session, dialect, metrics, window, n_units, exact)
    # SQLite: one statement per variant over its range of (experiment_id, phase, variant, unit_id)
    # (migration 0005): no sort of every unit by variant for the GROUP BY (SQLite has no hash
    # aggregate), and the units' rows come from the index alone.
    per_variant = dialect == "sqlite"
    head, params, binds, columns = _per_unit_sql(
        dialect, metrics, window, "eu.variant = :variant" if per_variant else "", exact
    )
    # (metric key, part, is pre-period) -> the per-unit value, capped for a winsorized metric
    values: dict[tuple[str, str, bool], str] = {}
    for j, (m, col, suffix, is_pre) in enumerate(columns):
        cut = cuts.get((m.key, suffix)) if m.winsorized else None
        capped, cut_params = _capped(f"v.{col}", cut, f"cut{j}", exact)
        params.update(cut_params)
        values[(m.key, suffix, is_pre)] = capped
    aggs, alias_of = sum_terms(metrics, values)
    selected = ", ".join(f"{expr} AS {alias}" for expr, alias in aggs)
    n_dims = len(window.dimensions)
    sv = "".join(f", v.sv{k}" for k in range(n_dims))
    sql = f"{head} SELECT v.variant{sv}, {selected} FROM v GROUP BY v.variant{sv}"
    settings = None
    runs: list[dict[str, Any]] = [params]
    if per_variant:
        group = f" GROUP BY {sv[2:]}" if n_dims else ""
        sql = f"{head} SELECT :variant AS variant{sv}, {selected} FROM v{group}"
        if variants is None:
            variants = _variants(session, window)
        runs = [params | {"variant": v} for v in dict.fromkeys(variants)]
    if dialect == "postgresql" and n_units >= PG_PARTITION_MIN_UNITS:
        # Units split by ranges of unit_id, each range aggregated to per-variant sums on its own
        # (a unit is in exactly one range), then the ranges summed: the ranges run in parallel
        # workers, and the per-unit rows never cross a Gather.
        cuts_at = _unit_quantiles(session, window, n_units, PG_PARTITIONS)
        edges: list[str | None] = [None, *[f":unit_b{k}" for k in range(len(cuts_at))], None]
        for k, b in enumerate(cuts_at):
            params[f"unit_b{k}"] = b
        branches = []
        for k, (lo, hi) in enumerate(itertools.pairwise(edges)):
            cond = " AND ".join(
                [f"eu.unit_id >= {lo}"] * (lo is not None)
                + [f"eu.unit_id < {hi}"] * (hi is not None)
            )
            part_head = _per_unit_sql(dialect, metrics, window, cond, exact)[0]
            branches.append(
                f"SELECT * FROM ({part_head} SELECT v.variant{sv}, {selected} FROM v"
                f" GROUP BY v.variant{sv}) p{k}"
            )
        totals = ", ".join(f"SUM(p.{alias}) AS {alias}" for _, alias in aggs)
        psv = "".join(f", p.sv{k}" for k in range(n_dims))
        sql = (
            f"SELECT p.variant{psv}, {totals} FROM ({' UNION ALL '.join(branches)}) p"
            f" GROUP BY p.variant{psv}"
        )
        settings = _PG_PARTITIONED
    out: dict[tuple[str, ...], dict[str, dict[str, MetricSums]]] = {}
    stmt = _statement(sql, binds)
    rows = [r for run in runs for r in _execute(session, dialect, stmt, run, settings)]
    for r in rows:
        row = r._mapping
        variant = str(row["variant"])
        n = int(row["n"])
        if n == 0:  # a variant without analysed units (per-variant statements)
            continue
        combo = tuple(str(row[f"sv{k}"]) for k in range(n_dims))
        per_metric = out.setdefault(combo, {m.key: {} for m in metrics})
        for key, sums in metric_sums_of(metrics, alias_of, n, row.__getitem__).items():
            per_metric[key][variant] = sums
    return out


def quantile_order_statistics(
    session: Session,
    metrics: Sequence[MetricSpec],
    window: Window,
    ranks: dict[str, dict[str, tuple[int, ...]]],
) -> dict[str, dict[str, dict[int, float]]]:
    """Order statistics of the per-unit values of quantile metrics, per variant.

    Parameters
    ----------
    session : Session
        An open session (reads only).
    metrics : Sequence[MetricSpec]
        The quantile metrics.
    window : Window
        The analysis window (``pre_period_days`` is ignored: quantiles have no CUPED).
    ranks : dict
        ``{variant: {metric key: (rank, ...)}}``: 1-based ranks wanted among the variant's
        analysed units (``stats.quantile_ranks``: the two around the quantile and the ends of
        its interval).

    Returns
    -------
    dict
        ``{metric key: {variant: {rank: value}}}``.

    Notes
    -----
    One statement per variant over the per-unit values ``v`` of that variant (the same CTE as
    the sums, so the same units and window): for each metric and each run of consecutive ranks,
    ``ORDER BY value LIMIT run OFFSET rank - 1`` returns only those rows; nothing else leaves the
    database. Ties order arbitrarily but the values are the same, so SQLite and PostgreSQL
    return the same numbers.
    """
    out: dict[str, dict[str, dict[int, float]]] = {m.key: {} for m in metrics}
    if not metrics:
        return out
    dialect = session.get_bind().dialect.name
    # The window as it is but without the pre-period and the slices: the time cut (``until``,
    # the series' day cut) too, so the order statistics are those of the units the ranks count.
    plain = replace(window, pre_period_days=None, dimensions=())
    head, params, binds, columns = _per_unit_sql(dialect, metrics, plain, "eu.variant = :variant")
    col_of = {m.key: col for m, col, _suffix, is_pre in columns if not is_pre}
    for variant, wanted in ranks.items():
        selects: list[str] = []
        run_params = dict(params, variant=variant)
        plan: list[tuple[str, int]] = []  # (metric key, first rank) per select
        for m in metrics:
            wanted_ranks = sorted(set(wanted.get(m.key, ())))
            runs: list[list[int]] = []
            for r in wanted_ranks:
                if runs and r == runs[-1][-1] + 1:
                    runs[-1].append(r)
                else:
                    runs.append([r])
            for run in runs:
                k = len(plan)
                run_params[f"qo{k}"] = run[0] - 1
                run_params[f"ql{k}"] = len(run)
                c = col_of[m.key]
                selects.append(
                    f"SELECT * FROM (SELECT {k} AS k, {c} AS x FROM v ORDER BY {c}"
                    f" LIMIT :ql{k} OFFSET :qo{k}) q{k}"
                )
                plan.append((m.key, run[0]))
        if not selects:
            continue
        sql = head + " " + " UNION ALL ".join(selects)
        got: dict[int, list[float]] = {}
        for row in _execute(session, dialect, _statement(sql, binds), run_params):
            got.setdefault(int(row.k), []).append(float(row.x))
        for k, (key, first) in enumerate(plan):
            values = sorted(got.get(k, []))
            target = out[key].setdefault(variant, {})
            for i, value in enumerate(values):
                target[first + i] = value
    return out


# {(dimension index, slice value): {variant: {metric key: (rank, ...)}}}
SliceRanks = dict[tuple[int, str], dict[str, dict[str, tuple[int, ...]]]]
# {(dimension index, slice value): {metric key: {variant: {rank: value}}}}
SliceOrderStatistics = dict[tuple[int, str], dict[str, dict[str, dict[int, float]]]]


def slice_order_statistics(
    session: Session,
    metrics: Sequence[MetricSpec],
    window: Window,
    ranks: SliceRanks,
) -> SliceOrderStatistics:
    """Order statistics of quantile metrics per slice and variant: those of the slice's units.

    Parameters
    ----------
    session : Session
        An open session (reads only).
    metrics : Sequence[MetricSpec]
        The quantile metrics.
    window : Window
        The analysis window with the slices' ``dimensions`` (each with its kept values).
    ranks : SliceRanks
        ``{(k, value): {variant: {metric key: (rank, ...)}}}``: 1-based ranks wanted among the
        variant's analysed units whose bucket of dimension ``k`` is ``value`` (a kept value,
        ``other`` or ``unknown``, as :func:`slice_sums` buckets them).

    Returns
    -------
    SliceOrderStatistics
        ``{(k, value): {metric key: {variant: {rank: value}}}}``.

    Notes
    -----
    One statement per variant over the per-unit values ``v`` of that variant with every
    dimension's bucket (the CTE of the slice sums): per metric and dimension, the units are
    numbered within their bucket in the order of the value (``ROW_NUMBER() OVER (PARTITION BY
    bucket ORDER BY value)``) and only the wanted (bucket, rank) rows leave the database. Ties
    are numbered arbitrarily but their values are equal.
    """
    out: SliceOrderStatistics = {s: {m.key: {} for m in metrics} for s in ranks}
    if not metrics or not ranks:
        return out
    dialect = session.get_bind().dialect.name
    plain = replace(window, pre_period_days=None)
    head, params, binds, columns = _per_unit_sql(dialect, metrics, plain, "eu.variant = :variant")
    col_of = {m.key: col for m, col, _suffix, is_pre in columns if not is_pre}
    variants = sorted({v for per in ranks.values() for v in per})
    for variant in variants:
        run_params = dict(params, variant=variant)
        selects: list[str] = []
        plan: list[tuple[str, int]] = []  # (metric key, dimension index) per select
        for m in metrics:
            c = col_of[m.key]
            for k in range(len(window.dimensions)):
                conds: list[str] = []
                for (dim, value), per_variant in ranks.items():
                    wanted = sorted({int(r) for r in per_variant.get(variant, {}).get(m.key, ())})
                    if dim != k or not wanted:
                        continue
                    p = f"qs{len(plan)}_{len(conds)}"
                    run_params[p] = value
                    conds.append(f"(r.s = :{p} AND r.rn IN ({', '.join(map(str, wanted))}))")
                if not conds:
                    continue
                j = len(plan)
                selects.append(
                    f"SELECT {j} AS k, r.s AS s, r.rn AS rn, r.x AS x FROM (SELECT v.sv{k} AS s,"
                    f" {c} AS x, ROW_NUMBER() OVER (PARTITION BY v.sv{k} ORDER BY {c}) AS rn"
                    f" FROM v) r WHERE {' OR '.join(conds)}"
                )
                plan.append((m.key, k))
        if not selects:
            continue
        sql = head + " " + " UNION ALL ".join(selects)
        for row in _execute(session, dialect, _statement(sql, binds), run_params):
            key, k = plan[int(row.k)]
            slot = out.get((k, str(row.s)))
            if slot is not None:
                slot[key].setdefault(variant, {})[int(row.rn)] = float(row.x)
    return out


# ------------------------------------------------------------------------------ aggregators


class Aggregator(Protocol):
    """Where the sufficient statistics come from: the built-in store (:class:`StoreAggregator`,
    the functions above) or a data source (``service.warehouse.source.SourceAggregator``, the
    same aggregation rendered in the source's SQL dialect). Same arguments, same numbers."""

    def count_exposures(self, window: Window) -> ExposureCounts: ...

    def variant_sums(
        self,
        metrics: Sequence[MetricSpec],
        window: Window,
        n_units: int,
        variants: Sequence[str] | None = None,
    ) -> dict[str, dict[str, MetricSums]]: ...

    def slice_sums(
        self,
        metrics: Sequence[MetricSpec],
        window: Window,
        n_units: int,
        variants: Sequence[str] | None = None,
    ) -> dict[tuple[str, ...], dict[str, dict[str, MetricSums]]]: ...

    def slice_counts(self, window: Window, dimension: str) -> dict[str | None, int]: ...

    def quantile_order_statistics(
        self,
        metrics: Sequence[MetricSpec],
        window: Window,
        ranks: dict[str, dict[str, tuple[int, ...]]],
    ) -> dict[str, dict[str, dict[int, float]]]: ...

    def slice_order_statistics(
        self, metrics: Sequence[MetricSpec], window: Window, ranks: SliceRanks
    ) -> SliceOrderStatistics: ...


class StoreAggregator:
    """The built-in store's aggregation (this module's SQL) read in ``session``."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def count_exposures(self, window: Window) -> ExposureCounts:
        return count_exposures(self.session, window)

    def variant_sums(
        self,
        metrics: Sequence[MetricSpec],
        window: Window,
        n_units: int,
        variants: Sequence[str] | None = None,
    ) -> dict[str, dict[str, MetricSums]]:
        return variant_sums(self.session, metrics, window, n_units, variants)

    def slice_sums(
        self,
        metrics: Sequence[MetricSpec],
        window: Window,
        n_units: int,
        variants: Sequence[str] | None = None,
    ) -> dict[tuple[str, ...], dict[str, dict[str, MetricSums]]]:
        return slice_sums(self.session, metrics, window, n_units, variants)

    def slice_counts(self, window: Window, dimension: str) -> dict[str | None, int]:
        return slice_counts(self.session, window, dimension)

    def quantile_order_statistics(
        self,
        metrics: Sequence[MetricSpec],
        window: Window,
        ranks: dict[str, dict[str, tuple[int, ...]]],
    ) -> dict[str, dict[str, dict[int, float]]]:
        return quantile_order_statistics(self.session, metrics, window, ranks)

    def slice_order_statistics(
        self, metrics: Sequence[MetricSpec], window: Window, ranks: SliceRanks
    ) -> SliceOrderStatistics:
        return slice_order_statistics(self.session, metrics, window, ranks)
