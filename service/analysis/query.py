"""The §6/§12 aggregation written once, rendered in every engine's SQL dialect (sqlglot).

Each statement is written once in one canonical form, parsed by sqlglot into an expression tree,
then the two engine-specific pieces are substituted into the tree (the organisation's tables or
SQL, parsed in the engine's own dialect, and the conversion of a timestamp to epoch
microseconds) and the tree is rendered in the engine's dialect. Only aggregates leave the
engine: per-variant sufficient statistics, a few order statistics, unit counts.

The statements (CTEs shared by all of them):

- ``xs``: the experiment's exposures from the organisation's table or SQL, columns mapped to
  ``tb_unit, tb_variant, tb_ts`` (epoch µs) and one ``tb_a{k}`` per sliced attribute; rows with
  a NULL unit, variant or time are ignored, duplicates of a mapped ``event_id`` count once.
  A mapped ``phase`` column selects the phase; without one, phase 1 takes every exposure and a
  later phase those from its start.
- ``eu``: one row per unit (as the built-in ``exposure_unit``): first exposure time, variant,
  ``tb_multi`` = 1 when the unit saw more than one variant, and the slice bucket of each
  dimension's value at the first exposure (kept values as themselves, any other ``other``, none
  ``unknown``).
- ``ev``: the conversions of the metrics' event names; a NULL ``value`` is 1 (the §5 default),
  duplicates of a mapped ``event_id`` count once.
- ``v``: one row per analysed unit (not multiple, not overridden, first exposed before the time
  cut) ``LEFT JOIN ev`` on the unit and the unit's window, ``[first, first + attribution
  window)``, with its pre-period twin ``[first − pre_period_days, first)`` (a hash join on the
  unit, every engine runs it so, the window's bounds checked on each match; on ClickHouse the
  join is on the unit alone and the bounds are checked after it); ``≤ stop`` and ``< cut``
  filter ``ev`` before the join. Each joined event gets an integer slot (its name and period)
  and each per-unit value is a ``CASE`` on the slot. A unit without events is 0.

and then, over ``v``: the sums per variant (and slice combination), the winsorization order
statistics pooled over all arms, the quantile metrics' order statistics per variant, and (over
``eu``) the unit counts per variant. The numbers are those of ``service.analysis.aggregate``
(the built-in store's SQL), proved equal by tests/service/warehouse.

Timestamps are compared as integer epoch microseconds, so no engine's interval arithmetic,
calendar or session time zone enters the window (a naive timestamp is read as UTC).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlglot
from sqlglot import exp

from service.analysis.spec import (
    MICROS_PER_SECOND,
    OTHER,
    UNKNOWN,
    Cuts,
    CutWanted,
    MetricSpec,
    Window,
    cuts_wanted,
    kind_of,
    sum_terms,
)

__all__ = [
    "DIALECTS",
    "Plan",
    "Side",
    "Store",
    "counts_sql",
    "counts_sums_sql",
    "cuts_sql",
    "epoch_us",
    "newest_sql",
    "order_statistics_sql",
    "partitioned_sums_sql",
    "plan_of",
    "probe_sql",
    "read_only_problem",
    "slice_counts_sql",
    "slice_order_statistics_sql",
    "sums_sql",
]

# engine name -> sqlglot dialect
DIALECTS: dict[str, str] = {
    "sqlite": "sqlite",
    "postgresql": "postgres",
    "duckdb": "duckdb",
    "clickhouse": "clickhouse",
    "spark": "spark",
    "bigquery": "bigquery",
    "snowflake": "snowflake",
    "trino": "trino",
    "databricks": "databricks",
}

# Epoch microseconds of a timestamp column, per dialect ({x} is the column). Integer, exact.
_EPOCH_US: dict[str, str] = {
    "duckdb": "epoch_us({x})",
    "clickhouse": "toUnixTimestamp64Micro(toDateTime64({x}, 6, 'UTC'))",
    "spark": "unix_micros(CAST({x} AS TIMESTAMP))",
    "databricks": "unix_micros(CAST({x} AS TIMESTAMP))",
    # EXTRACT(EPOCH …) is numeric (exact) since PostgreSQL 14; a timestamp without zone as UTC
    "postgres": "CAST(EXTRACT(EPOCH FROM {x}) * 1000000 AS BIGINT)",
    # ISO-8601 text (Trialbook's and Python's form: 6 fraction digits, optional offset)
    "sqlite": (
        "(CAST(strftime('%s', {x}) AS INTEGER) * 1000000 + CASE WHEN substr({x}, 20, 1) = '.'"
        " THEN CAST(substr({x} || '000000', 21, 6) AS INTEGER) ELSE 0 END)"
    ),
    "bigquery": "UNIX_MICROS(CAST({x} AS TIMESTAMP))",
    "snowflake": "DATE_PART(EPOCH_MICROSECOND, {x})",
    "trino": "CAST(round(to_unixtime({x}) * 1000000) AS BIGINT)",
}

_EPOCH_FN = "tb_epoch_us"  # placeholder function of the canonical form, replaced per dialect
_EXPOSURES = "tb_exposures_source"  # placeholder tables
_EVENTS = "tb_events_source"
_CANONICAL = "duckdb"  # the dialect the canonical text is written in

# The built-in store (Store) compares its own timestamps, natively: placeholder functions of the
# canonical form, replaced per dialect (SQLite, PostgreSQL) like tb_epoch_us.
_TIME_FN = "tb_time"  # tb_time(µs): that point in time as the store's columns hold it
_SHIFT_FN = "tb_shift"  # tb_shift(ts, µs): the timestamp ts moved by µs, exactly
_ATTR_FN = "tb_attr"  # tb_attr(attributes, 'name'): a unit's attribute, text or NULL
_EXACT_FN = "tb_exact"  # tb_exact(x): x in numeric (PostgreSQL's exact pass)
_PLACEHOLDER_FNS = (_EPOCH_FN, _TIME_FN, _SHIFT_FN, _ATTR_FN, _EXACT_FN)


def _store_template(dialect: str, name: str, literal: str | None) -> str:
    """The SQL text (in ``dialect``) of a store placeholder; ``_EPOCH_ARG`` stands for its
    expression argument, ``literal`` is its constant argument.

    SQLite: ``UTCDateTime`` columns hold ``'YYYY-MM-DD HH:MM:SS.ffffff'`` text, which orders like
    time, so a bound is text of the same shape: ``datetime()`` shifts the whole seconds (its
    output has no fraction) and the fraction is carried by hand, exactly. PostgreSQL: a
    ``timestamptz`` ± an interval in microseconds (absolute time, no calendar or DST)."""
    x = _EPOCH_ARG
    if name == _TIME_FN:
        assert literal is not None
        t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(literal))
        if dialect == "sqlite":
            return _s(t.strftime("%Y-%m-%d %H:%M:%S.%f"))
        return f"CAST({_s(t.isoformat())} AS TIMESTAMPTZ)"
    if name == _SHIFT_FN:
        assert literal is not None
        us = int(literal)
        if dialect != "sqlite":
            return f"({x} + CAST({us} AS BIGINT) * INTERVAL '1 microsecond')"
        secs, rem = divmod(us, MICROS_PER_SECOND)
        if rem == 0:  # whole seconds (the usual case): the fraction is unchanged
            return f"(datetime(substr({x}, 1, 19), '{secs:+d} seconds') || substr({x}, 20))"
        micros = f"(CAST(substr({x}, 21, 6) AS INTEGER) + {rem})"
        return (
            f"(datetime(substr({x}, 1, 19), printf('%+d seconds', {secs} + {micros}"
            f" / {MICROS_PER_SECOND})) || printf('.%06d', {micros} % {MICROS_PER_SECOND}))"
        )
    if name == _ATTR_FN:
        assert literal is not None
        if dialect == "sqlite":
            path = '$."' + literal.replace('"', '\\"') + '"'
            return f"json_extract({x}, {_s(path)})"
        return f"(CAST({x} AS JSONB) ->> {_s(literal)})"
    assert name == _EXACT_FN
    return x if dialect == "sqlite" else f"CAST({x} AS NUMERIC)"


@dataclass(frozen=True)
class Side:
    """One side of a data source's mapping: a table or a SELECT, and our column -> theirs."""

    columns: dict[str, str]
    table: str | None = None
    sql: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)  # dimension -> column


@dataclass(frozen=True)
class Plan:
    """What to aggregate: the experiment's window, in epoch microseconds."""

    experiment: str
    phase: int
    phase_start_us: int | None = None
    overrides: Sequence[str] = ()
    window_us: int | None = None
    stopped_us: int | None = None
    pre_us: int | None = None
    until_us: int | None = None
    dimensions: Sequence[tuple[str, Sequence[str]]] = ()
    # Slice buckets only: the raw attribute values (slice_counts_sql) need no buckets.
    metrics: Sequence[MetricSpec] = ()


@dataclass(frozen=True)
class Store:
    """The built-in store as the builder's input, in place of the two sides: ``exposure_unit``
    (one row per unit and phase: variant, first exposure, ``multiple``, the dimensions'
    attributes, kept by ingestion) and ``conversion``, compared in their native timestamps
    (SQLite: text, PostgreSQL: ``timestamptz``) so that each unit's events in its window are one
    range read of the index ``conversion (unit_id, ts, name, value)`` (see :func:`_store_per_unit`).

    ``variant``: that variant's units only (SQLite runs one statement per variant over the index
    ``exposure_unit (experiment_id, phase, variant, unit_id, …)``: no sort for the grouping);
    ``units``: unit ids in ``[low, high)`` only (PostgreSQL's partitions); ``also_in``: units also
    analysed in (experiment id, phase, variant) only; ``exact``: per-unit values and sums in
    ``numeric`` (PostgreSQL, after a double overflow).
    """

    experiment_id: int
    variant: str | None = None
    units: tuple[str | None, str | None] = (None, None)
    also_in: tuple[int, int, str] | None = None
    exact: bool = False


Source = Side | Store


def plan_of(
    window: Window,
    metrics: Sequence[MetricSpec] = (),
    experiment: str = "",
    phase_start_us: int | None = None,
) -> Plan:
    """The plan of an analysis window (times in epoch microseconds)."""
    hours = window.attribution_window_hours
    pre_days = window.pre_period_days
    return Plan(
        experiment=experiment,
        phase=window.phase,
        phase_start_us=phase_start_us,
        overrides=tuple(window.overrides),
        window_us=None if hours is None else round(hours * 3600 * MICROS_PER_SECOND),
        stopped_us=None if window.stopped_at is None else epoch_us(window.stopped_at),
        pre_us=None if pre_days is None else int(pre_days) * 86_400 * MICROS_PER_SECOND,
        until_us=None if window.until is None else epoch_us(window.until),
        dimensions=tuple(window.dimensions),
        metrics=tuple(metrics),
    )


def epoch_us(t: datetime) -> int:
    """Epoch microseconds of an aware (or UTC-naive) datetime, exactly."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    delta = t - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# ----------------------------------------------------------------------------- canonical text


def _q(name: str) -> str:
    """A quoted identifier of the canonical form."""
    return '"' + name.replace('"', '""') + '"'


def _s(value: str) -> str:
    """A string literal of the canonical form."""
    return "'" + value.replace("'", "''") + "'"


def _f(value: float) -> str:
    """A double literal, exact (repr round-trips)."""
    return f"CAST({value!r} AS DOUBLE)"


def _in_list(values: Sequence[str]) -> str:
    return "(" + ", ".join(_s(v) for v in values) + ")"


ONE = "CAST(1 AS DOUBLE)"
ZERO = "CAST(0 AS DOUBLE)"


def _exposures_cte(exposures: Side, plan: Plan, dims: Sequence[str]) -> str:
    c = exposures.columns
    ts = f"{_EPOCH_FN}(s.{_q(c['timestamp'])})"
    attrs = ""
    for k, name in enumerate(dims):
        column = exposures.attributes.get(name)
        value = f"CAST(s.{_q(column)} AS VARCHAR)" if column else "CAST(NULL AS VARCHAR)"
        attrs += f", {value} AS tb_a{k}"
    where = [
        f"CAST(s.{_q(c['experiment'])} AS VARCHAR) = {_s(plan.experiment)}",
        f"s.{_q(c['unit_id'])} IS NOT NULL",
        f"s.{_q(c['variant'])} IS NOT NULL",
        f"s.{_q(c['timestamp'])} IS NOT NULL",
    ]
    if "phase" in c:
        where.append(f"s.{_q(c['phase'])} = {int(plan.phase)}")
    elif plan.phase > 1 and plan.phase_start_us is not None:
        where.append(f"{ts} >= {int(plan.phase_start_us)}")
    source = f"{_EXPOSURES} s"
    if "event_id" in c:  # duplicates of an event id count once (the earliest)
        eid = _q(c["event_id"])
        source = (
            f"(SELECT d.*, ROW_NUMBER() OVER (PARTITION BY d.{eid} ORDER BY d.{_q(c['timestamp'])})"
            f" AS tb_dup FROM {_EXPOSURES} d) s"
        )
        where.append(f"(s.tb_dup = 1 OR s.{eid} IS NULL)")
    return (
        f"tb_xs AS (SELECT CAST(s.{_q(c['unit_id'])} AS VARCHAR) AS tb_unit,"
        f" CAST(s.{_q(c['variant'])} AS VARCHAR) AS tb_variant, {ts} AS tb_ts{attrs}"
        f" FROM {source} WHERE {' AND '.join(where)})"
    )


def _bucket(raw: str, kept: Sequence[str]) -> str:
    if kept:
        return (
            f"CASE WHEN {raw} IS NULL THEN {_s(UNKNOWN)} WHEN {raw} IN {_in_list(kept)}"
            f" THEN {raw} ELSE {_s(OTHER)} END"
        )
    return f"CASE WHEN {raw} IS NULL THEN {_s(UNKNOWN)} ELSE {_s(OTHER)} END"


def _units_cte(plan: Plan, dims: Sequence[tuple[str, Sequence[str]]], raw: bool) -> str:
    """``eu``: one row per unit. ``raw``: the dimensions' values unbucketed (``tb_a{k}``)."""
    group = (
        "SELECT xs.tb_unit AS g_unit, MIN(xs.tb_variant) AS g_variant, MIN(xs.tb_ts) AS g_first,"
        " CASE WHEN MIN(xs.tb_variant) <> MAX(xs.tb_variant) THEN 1 ELSE 0 END AS g_multi"
        " FROM tb_xs xs GROUP BY xs.tb_unit"
    )
    if not dims:
        return (
            "tb_eu AS (SELECT g.g_unit AS tb_unit, g.g_variant AS tb_variant,"
            f" g.g_first AS tb_first, g.g_multi AS tb_multi FROM ({group}) g)"
        )
    order = ", ".join(f"xs.tb_a{k}" for k in range(len(dims)))
    picked = ", ".join(f"xs.tb_a{k} AS f_a{k}" for k in range(len(dims)))
    first = (
        f"SELECT xs.tb_unit AS f_unit, {picked},"
        f" ROW_NUMBER() OVER (PARTITION BY xs.tb_unit ORDER BY xs.tb_ts, {order}) AS f_rn"
        " FROM tb_xs xs"
    )
    cols = ""
    for k, (_name, kept) in enumerate(dims):
        value = f"f.f_a{k}" if raw else _bucket(f"f.f_a{k}", kept)
        cols += f", {value} AS tb_sv{k}"
    return (
        "tb_eu AS (SELECT g.g_unit AS tb_unit, g.g_variant AS tb_variant, g.g_first AS tb_first,"
        f" g.g_multi AS tb_multi{cols} FROM ({group}) g JOIN ({first}) f"
        " ON f.f_unit = g.g_unit AND f.f_rn = 1)"
    )


def _event_names(metrics: Sequence[MetricSpec]) -> list[str]:
    """The event names the metrics read, each once, in order."""
    names: list[str] = []
    for m in metrics:
        for _suffix, event in m.parts:
            if event not in names:
                names.append(event)
    return names


def _fixed_bounds(plan: Plan) -> list[str]:
    """The bounds on ``c_ts`` (epoch µs) that are the same for every unit: ``≤ stop``, ``< cut``
    (the events' filter of :func:`_events_cte`)."""
    fixed = []
    if plan.stopped_us is not None:
        fixed.append(f"c_ts <= {int(plan.stopped_us)}")
    if plan.until_us is not None:
        fixed.append(f"c_ts < {int(plan.until_us)}")
    return fixed


def _events_cte(events: Side, names: Sequence[str], fixed: Sequence[str] = ()) -> str:
    """``ev``: the conversions of ``names``; ``fixed``: conditions on ``c_ts`` (epoch µs)."""
    c = events.columns
    value = f"CAST(COALESCE(s.{_q(c['value'])}, 1) AS DOUBLE)" if "value" in c else ONE
    where = [
        f"CAST(s.{_q(c['name'])} AS VARCHAR) IN {_in_list(names)}",
        f"s.{_q(c['name'])} IS NOT NULL",
        f"s.{_q(c['unit_id'])} IS NOT NULL",
        f"s.{_q(c['timestamp'])} IS NOT NULL",
    ]
    source = f"{_EVENTS} s"
    if "event_id" in c:
        eid = _q(c["event_id"])
        source = (
            f"(SELECT d.*, ROW_NUMBER() OVER (PARTITION BY d.{eid} ORDER BY d.{_q(c['timestamp'])})"
            f" AS tb_dup FROM {_EVENTS} d) s"
        )
        where.append(f"(s.tb_dup = 1 OR s.{eid} IS NULL)")
    ts = f"{_EPOCH_FN}(s.{_q(c['timestamp'])})"
    where += [cond.replace("c_ts", ts) for cond in fixed]
    return (
        f"tb_ev AS (SELECT CAST(s.{_q(c['unit_id'])} AS VARCHAR) AS c_unit,"
        f" CAST(s.{_q(c['name'])} AS VARCHAR) AS c_name, {value} AS c_value,"
        f" {ts} AS c_ts FROM {source} WHERE {' AND '.join(where)})"
    )


def _at(src: Source, us: int) -> str:
    """A point in time as ``src`` compares it: epoch µs, or the store's native timestamp."""
    return f"{_TIME_FN}({int(us)})" if isinstance(src, Store) else str(int(us))


def _analysed(src: Source, plan: Plan) -> str:
    """The units of ``eu`` that are analysed: one variant, no override, before the time cut."""
    cond = "eu.tb_multi = 0"
    if plan.overrides:
        cond += f" AND NOT eu.tb_unit IN {_in_list(list(plan.overrides))}"
    if plan.until_us is not None:
        cond += f" AND eu.tb_first < {_at(src, plan.until_us)}"
    return cond


def _store_where(store: Store, plan: Plan) -> list[str]:
    """The store's units of the experiment's phase (and of ``store``'s restrictions)."""
    where = [f"eu.experiment_id = {int(store.experiment_id)}", f"eu.phase = {int(plan.phase)}"]
    if store.variant is not None:
        where.append(f"eu.variant = {_s(store.variant)}")
    low, high = store.units
    if low is not None:
        where.append(f"eu.unit_id >= {_s(low)}")
    if high is not None:
        where.append(f"eu.unit_id < {_s(high)}")
    return where


def _store_buckets(plan: Plan, raw: bool) -> str:
    """``, <bucket> AS tb_sv{k}`` of each dimension, from the unit's stored attributes."""
    out = ""
    for k, (name, kept) in enumerate(plan.dimensions):
        value = f"{_ATTR_FN}(eu.attributes, {_s(name)})"
        out += f", {value if raw else _bucket(value, kept)} AS tb_sv{k}"
    return out


def _units_ctes(src: Source, plan: Plan, raw: bool = False) -> str:
    """``WITH …`` up to ``tb_eu``: one row per exposed unit (``tb_unit, tb_variant, tb_first,
    tb_multi`` and ``tb_sv{k}`` per dimension), multiple-exposure units included."""
    if isinstance(src, Store):
        return (
            "WITH tb_eu AS (SELECT eu.unit_id AS tb_unit, eu.variant AS tb_variant,"
            " eu.first_ts AS tb_first, CASE WHEN eu.multiple THEN 1 ELSE 0 END AS tb_multi"
            f"{_store_buckets(plan, raw)} FROM exposure_unit eu"
            f" WHERE {' AND '.join(_store_where(src, plan))})"
        )
    dims = list(plan.dimensions)
    return (
        f"WITH {_exposures_cte(src, plan, [d for d, _ in dims])}, {_units_cte(plan, dims, raw=raw)}"
    )


def _value_columns(
    metrics: Sequence[MetricSpec],
    periods: Sequence[bool],
    value: Callable[[str, str, bool], str],
) -> tuple[dict[str, str], list[tuple[MetricSpec, str, str, bool]]]:
    """The per-unit value columns of ``tb_v``: ``{expression: column}`` (two metrics reading an
    event the same way share one) and (metric, column, part, is pre-period) of each metric's
    part and period; ``value(kind, event, is_pre)`` is the join strategy's aggregate."""
    agg_cols: dict[str, str] = {}
    columns: list[tuple[MetricSpec, str, str, bool]] = []
    for m in metrics:
        for suffix, event in m.parts:
            for is_pre in periods:
                col = agg_cols.setdefault(value(kind_of(m), event, is_pre), f"u{len(agg_cols)}")
                columns.append((m, col, suffix, is_pre))
    return agg_cols, columns


@dataclass
class _PerUnit:
    sql: str  # the CTEs, from WITH up to and including v
    columns: list[tuple[MetricSpec, str, str, bool]]  # (metric, column of v, part, is pre)


def _per_unit(
    dialect: str,
    exposures: Side,
    events: Side,
    plan: Plan,
    metrics: Sequence[MetricSpec],
    pre: bool,
) -> _PerUnit:
    dims = list(plan.dimensions)
    names = _event_names(metrics)
    with_pre = pre and plan.pre_us is not None
    # The bounds that are the same for every unit filter the events before the join; those of
    # the unit's window are conditions of the join, so a unit's events outside them never reach
    # the grouping (a unit left with none is one row of NULLs: 0). ClickHouse, before its
    # recent releases, joins on equalities only: there the window's bounds are the slot's
    # condition instead (the same numbers; every event of the unit reaches the grouping).
    fixed = _fixed_bounds(plan)
    bounds = []
    if with_pre and plan.pre_us:
        bounds.append(f"c.c_ts >= eu.tb_first - {int(plan.pre_us)}")
    else:
        bounds.append("c.c_ts >= eu.tb_first")
    if plan.window_us is not None:
        bounds.append(f"c.c_ts < eu.tb_first + {int(plan.window_us)}")
    equi_only = dialect == "clickhouse"
    on = ["c.c_unit = eu.tb_unit", *([] if equi_only else bounds)]
    periods = (False, True) if with_pre else (False,)
    # Each joined event's slot, an integer computed once per row: 2 × (the index of its name)
    # in the window, one more in the pre-period; NULL for the row of a unit without events
    # (NULL, or on ClickHouse the empty default, matches no name).
    slot = "CASE c.c_name " + " ".join(f"WHEN {_s(n)} THEN {2 * i}" for i, n in enumerate(names))
    slot += " END" if names else "WHEN '' THEN 0 END"
    if with_pre:
        slot = f"{slot} + CASE WHEN c.c_ts < eu.tb_first THEN 1 ELSE 0 END"
    if equi_only:
        slot = f"CASE WHEN {' AND '.join(bounds)} THEN {slot} END"
    index = {n: i for i, n in enumerate(names)}
    # Every unit, with its events: ClickHouse builds its hash table from the right side of a
    # join, so there the units (one row each) are the right side, not the events (5 × as many
    # at 2M units: the join took 8.0 s against 2.9 s).
    joined = "tb_ev c RIGHT JOIN tb_eu eu" if equi_only else "tb_eu eu LEFT JOIN tb_ev c"

    def value(kind: str, event: str, is_pre: bool) -> str:
        when = f"j.tb_s = {2 * index[event] + (1 if is_pre else 0)}"
        if kind == "any":
            return f"MAX(CASE WHEN {when} THEN {ONE} ELSE {ZERO} END)"
        if kind == "count":
            return f"SUM(CASE WHEN {when} THEN {ONE} ELSE {ZERO} END)"
        return f"SUM(CASE WHEN {when} THEN j.c_value ELSE {ZERO} END)"

    agg_cols, columns = _value_columns(metrics, periods, value)
    sv = "".join(f", eu.tb_sv{k}" for k in range(len(dims)))
    jsv = "".join(f", j.tb_sv{k}" for k in range(len(dims)))
    selected = ", ".join(f"{expr} AS {col}" for expr, col in agg_cols.items())
    ctes = [
        _exposures_cte(exposures, plan, [d for d, _ in dims]),
        _units_cte(plan, dims, raw=False),
        _events_cte(events, names or ["\x00none"], fixed),
        f"tb_j AS (SELECT eu.tb_unit AS tb_unit, eu.tb_variant AS tb_variant{sv},"
        f" c.c_value AS c_value, {slot} AS tb_s"
        f" FROM {joined} ON {' AND '.join(on)}"
        f" WHERE {_analysed(exposures, plan)})",
        f"tb_v AS (SELECT j.tb_unit AS tb_unit, j.tb_variant AS tb_variant{jsv}, {selected}"
        f" FROM tb_j j GROUP BY j.tb_unit, j.tb_variant{jsv})",
    ]
    return _PerUnit("WITH " + ", ".join(ctes), columns)


def _store_per_unit(
    dialect: str, store: Store, plan: Plan, metrics: Sequence[MetricSpec], pre: bool
) -> _PerUnit:
    """``tb_v`` on the built-in store: one row per analysed unit, its variant, slice buckets and
    per-unit values, in one ``LEFT JOIN`` of ``exposure_unit`` with its conversions in the unit's
    window, grouped by the primary key of ``exposure_unit``.

    The plan must stream (issue 7): both sides are read in ``unit_id`` order (the primary key
    and the covering index ``conversion (unit_id, ts, name, value)``), each unit's events are one
    range read between bounds computed once per unit, the grouping needs no sort and no hash
    table (PostgreSQL drops the other grouping columns as functionally dependent on the key;
    SQLite, given one variant, reads ``(experiment_id, phase, variant, unit_id)`` in order), and
    per event only ``FILTER``-ed aggregates run. A unit without events is 0. PostgreSQL also
    filters the index scan on the metrics' event names; SQLite does not (it would seek once per
    name in ``(name, unit_id, ts)`` instead of reading the unit's range, and every ``FILTER``
    checks the name anyway).
    """
    names = _event_names(metrics)
    where = [*_store_where(store, plan), "NOT eu.multiple"]
    if plan.until_us is not None:
        where.append(f"eu.first_ts < {_at(store, plan.until_us)}")
    if plan.overrides:
        where.append(f"NOT eu.unit_id IN {_in_list(list(plan.overrides))}")
    if store.also_in is not None:
        o_exp, o_phase, o_variant = store.also_in
        where.append(
            "EXISTS (SELECT 1 FROM exposure_unit eo WHERE eo.experiment_id ="
            f" {int(o_exp)} AND eo.phase = {int(o_phase)} AND eo.variant = {_s(o_variant)}"
            " AND eo.unit_id = eu.unit_id AND NOT eo.multiple)"
        )
    with_pre = pre and plan.pre_us is not None
    lo = (
        f"{_SHIFT_FN}(eu.first_ts, {-int(plan.pre_us)})"
        if with_pre and plan.pre_us
        else "eu.first_ts"
    )
    join = ["c.unit_id = eu.unit_id", f"c.ts >= {lo}"]
    if dialect != "sqlite":
        join.append(f"c.name IN {_in_list(names or [chr(0) + 'none'])}")
    if plan.window_us is not None:
        join.append(f"c.ts < {_SHIFT_FN}(eu.first_ts, {int(plan.window_us)})")
    if plan.stopped_us is not None:
        join.append(f"c.ts <= {_at(store, plan.stopped_us)}")
    if plan.until_us is not None:
        join.append(f"c.ts < {_at(store, plan.until_us)}")
    periods = (False, True) if with_pre else (False,)

    def value(kind: str, event: str, is_pre: bool) -> str:
        when = f"c.name = {_s(event)} AND c.ts {'<' if is_pre else '>='} eu.first_ts"
        if kind == "any":
            return f"COALESCE(MAX(1) FILTER (WHERE {when}), 0)"
        if kind == "count":
            count = f"COUNT(*) FILTER (WHERE {when})"
            return f"{_EXACT_FN}({count})" if store.exact else f"CAST({count} AS DOUBLE)"
        summed = f"{_EXACT_FN}(c.value)" if store.exact else "c.value"
        return f"COALESCE(SUM({summed}) FILTER (WHERE {when}), 0)"

    agg_cols, columns = _value_columns(metrics, periods, value)
    selected = "".join(f", {expr} AS {col}" for expr, col in agg_cols.items())
    sql = (
        "WITH tb_v AS (SELECT eu.unit_id AS tb_unit, eu.variant AS tb_variant"
        f"{_store_buckets(plan, raw=False)}{selected} FROM exposure_unit eu LEFT JOIN conversion c"
        f" ON {' AND '.join(join)} WHERE {' AND '.join(where)}"
        " GROUP BY eu.experiment_id, eu.phase, eu.unit_id, eu.variant)"
    )
    return _PerUnit(sql, columns)


def _values(
    dialect: str,
    exposures: Source,
    events: Side | None,
    plan: Plan,
    metrics: Sequence[MetricSpec],
    pre: bool,
) -> _PerUnit:
    """``WITH …`` up to ``tb_v``: the analysed units' per-unit values, on the store or a source."""
    if isinstance(exposures, Store):
        return _store_per_unit(dialect, exposures, plan, metrics, pre)
    assert events is not None
    return _per_unit(dialect, exposures, events, plan, metrics, pre)


# ------------------------------------------------------------------------------- statements


def _sums_body(
    dialect: str, exposures: Source, events: Side | None, plan: Plan, cuts: Cuts
) -> tuple[str, list[tuple[str, str]], dict[str, str]]:
    """The canonical sums statement, its ``(expression, column)`` aggregates and ``{alias:
    column}``."""
    ctes, select, aggs, alias_of = _sums_parts(dialect, exposures, events, plan, cuts)
    return f"{ctes} {select}", aggs, alias_of


def _sums_parts(
    dialect: str, exposures: Source, events: Side | None, plan: Plan, cuts: Cuts
) -> tuple[str, str, list[tuple[str, str]], dict[str, str]]:
    """The sums statement in two parts: its CTEs (``WITH …`` up to ``tb_v``) and its final
    ``SELECT``; then its aggregates and ``{alias: column}``."""
    per_unit = _values(dialect, exposures, events, plan, plan.metrics, pre=True)
    exact = isinstance(exposures, Store) and exposures.exact
    values: dict[tuple[str, str, bool], str] = {}
    for m, col, suffix, is_pre in per_unit.columns:
        cut = cuts.get((m.key, suffix)) if m.winsorized else None
        values[(m.key, suffix, is_pre)] = _capped(f"v.{col}", cut, exact)
    aggs, alias_of = sum_terms(plan.metrics, values)
    selected = ", ".join(f"{expr} AS {alias}" for expr, alias in aggs)
    sv = "".join(f", v.tb_sv{k}" for k in range(len(plan.dimensions)))
    if isinstance(exposures, Store) and exposures.variant is not None:
        # one variant (SQLite): no grouping by it, so no sort; a variant without units is n = 0
        group = f" GROUP BY {sv[2:]}" if sv else ""
        select = f"SELECT {_s(exposures.variant)} AS variant{sv}, {selected} FROM tb_v v{group}"
    else:
        select = (
            f"SELECT v.tb_variant AS variant{sv}, {selected} FROM tb_v v GROUP BY v.tb_variant{sv}"
        )
    return per_unit.sql, select, aggs, alias_of


def sums_sql(
    dialect: str, exposures: Source, events: Side | None, plan: Plan, cuts: Cuts
) -> tuple[str, dict[str, str]]:
    """Per variant (and slice combination): ``n`` and every sum of the plan's metrics.

    Returns the SQL and ``{alias: column}`` (two metrics may share a column; ``m{i}_sum_x`` …
    as in ``service.analysis.spec.sum_terms``)."""
    sql, _aggs, alias_of = _sums_body(dialect, exposures, events, plan, cuts)
    return render(dialect, sql, exposures, events), alias_of


def counts_sums_sql(
    dialect: str, exposures: Side, events: Side, plan: Plan
) -> tuple[str, dict[str, str]]:
    """:func:`counts_sql` and :func:`sums_sql` (no slices, no winsorization: its cut points need
    the counts first) in one statement that groups the exposures by unit once: per variant,
    ``variant, total, multiple, overridden, analysed`` and then ``n`` and the sums (NULL, or 0 on
    ClickHouse, for a variant without analysed units)."""
    assert not plan.dimensions and not any(m.winsorized for m in plan.metrics)
    ctes, select, aggs, alias_of = _sums_parts(dialect, exposures, events, plan, {})
    sums = ", ".join(f"s.{alias} AS {alias}" for _, alias in aggs)
    sql = (
        f"{ctes}, tb_s AS ({select}), tb_c AS ({_counts_select(exposures, plan)})"
        " SELECT c.variant AS variant, c.total AS total, c.multiple AS multiple,"
        f" c.overridden AS overridden, c.analysed AS analysed, {sums}"
        " FROM tb_c c LEFT JOIN tb_s s ON s.variant = c.variant"
    )
    return render(dialect, sql, exposures, events), alias_of


def partitioned_sums_sql(
    dialect: str, parts: Sequence[Store], plan: Plan, cuts: Cuts
) -> tuple[str, dict[str, str]]:
    """:func:`sums_sql` on the store, its units split into ``parts`` (disjoint ranges of unit
    ids), each aggregated to per-variant sums on its own and then summed: PostgreSQL runs the
    parts side by side (Parallel Append), and the per-unit rows never cross a Gather."""
    branches = []
    aggs: list[tuple[str, str]] = []
    alias_of: dict[str, str] = {}
    for k, part in enumerate(parts):
        body, aggs, alias_of = _sums_body(dialect, part, None, plan, cuts)
        branches.append(f"SELECT * FROM ({body}) p{k}")
    totals = ", ".join(f"SUM(p.{alias}) AS {alias}" for _, alias in aggs)
    psv = "".join(f", p.tb_sv{k}" for k in range(len(plan.dimensions)))
    sql = (
        f"SELECT p.variant{psv}, {totals} FROM ({' UNION ALL '.join(branches)}) p"
        f" GROUP BY p.variant{psv}"
    )
    return render(dialect, sql, parts[0], None), alias_of


def _capped(expr: str, cut: tuple[float | None, float | None] | None, exact: bool = False) -> str:
    if cut is None:
        return expr
    low, high = cut

    def lit(value: float) -> str:  # exact: compared in numeric (a double would overflow)
        return f"{_EXACT_FN}({_f(value)})" if exact else _f(value)

    out = expr
    if low is not None:
        out = f"CASE WHEN {out} < {lit(low)} THEN {lit(low)} ELSE {out} END"
    if high is not None:
        out = f"CASE WHEN {out} > {lit(high)} THEN {lit(high)} ELSE {out} END"
    return f"({out})"


def cuts_sql(
    dialect: str, exposures: Source, events: Side | None, plan: Plan, n_units: int
) -> tuple[str, list[CutWanted]] | None:
    """The two order statistics around each winsorization cut point, pooled over all arms.

    Returns the SQL (rows ``k, rn, x``) and the cut point of each ``k``; None when no metric is
    winsorized."""
    wanted = [m for m in plan.metrics if m.winsorized]
    if not wanted or n_units == 0:
        return None
    flat = replace(plan, dimensions=())
    per_unit = _values(dialect, exposures, events, flat, wanted, pre=False)
    wanted_cuts = cuts_wanted(per_unit.columns, n_units)
    selects = [
        f"SELECT {k} AS k, r.rn AS rn, r.x AS x FROM (SELECT v.{w.column} AS x,"
        f" ROW_NUMBER() OVER (ORDER BY v.{w.column}) AS rn FROM tb_v v) r"
        f" WHERE r.rn IN ({w.offset + 1}, {w.offset + 2})"
        for k, w in enumerate(wanted_cuts)
    ]
    sql = per_unit.sql + " " + " UNION ALL ".join(selects)
    return render(dialect, sql, exposures, events), wanted_cuts


def order_statistics_sql(
    dialect: str,
    exposures: Source,
    events: Side | None,
    plan: Plan,
    ranks: dict[str, dict[str, Sequence[int]]],
) -> tuple[str, list[str]] | None:
    """Order statistics of quantile metrics per variant: rows ``k, variant, rn, x``.

    ``ranks``: ``{variant: {metric key: 1-based ranks}}``. Returns the SQL and the metric key
    of each ``k``; None when nothing is wanted."""
    metrics = [m for m in plan.metrics if m.type == "quantile"]
    flat = replace(plan, dimensions=(), pre_us=None)
    per_unit = _values(dialect, exposures, events, flat, metrics, pre=False)
    selects: list[str] = []
    keys: list[str] = []
    for m, col, _suffix, _is_pre in per_unit.columns:
        conds = []
        for variant, wanted in ranks.items():
            rs = sorted({int(r) for r in wanted.get(m.key, ())})
            if rs:
                conds.append(
                    f"(r.variant = {_s(variant)} AND r.rn IN ({', '.join(str(r) for r in rs)}))"
                )
        if not conds:
            continue
        k = len(keys)
        selects.append(
            f"SELECT {k} AS k, r.variant AS variant, r.rn AS rn, r.x AS x FROM"
            f" (SELECT v.tb_variant AS variant, v.{col} AS x, ROW_NUMBER() OVER"
            f" (PARTITION BY v.tb_variant ORDER BY v.{col}) AS rn FROM tb_v v) r"
            f" WHERE {' OR '.join(conds)}"
        )
        keys.append(m.key)
    if not selects:
        return None
    sql = per_unit.sql + " " + " UNION ALL ".join(selects)
    return render(dialect, sql, exposures, events), keys


def slice_order_statistics_sql(
    dialect: str,
    exposures: Source,
    events: Side | None,
    plan: Plan,
    ranks: dict[tuple[int, str], dict[str, dict[str, Sequence[int]]]],
) -> tuple[str, list[tuple[str, int]]] | None:
    """Order statistics of quantile metrics per slice and variant: rows ``k, variant, s, rn, x``
    (``s``: the bucket of the ``k``-th select's dimension).

    ``ranks``: ``{(dimension index, bucket): {variant: {metric key: 1-based ranks}}}``, ranks
    among the variant's units in that bucket of the plan's ``dimensions``. Returns the SQL and
    (metric key, dimension index) of each ``k``; None when nothing is wanted."""
    metrics = [m for m in plan.metrics if m.type == "quantile"]
    per_unit = _values(dialect, exposures, events, replace(plan, pre_us=None), metrics, pre=False)
    selects: list[str] = []
    meta: list[tuple[str, int]] = []
    for m, col, _suffix, _is_pre in per_unit.columns:
        for d in range(len(plan.dimensions)):
            conds = []
            for (dim, value), per_variant in ranks.items():
                for variant, wanted in per_variant.items():
                    rs = sorted({int(r) for r in wanted.get(m.key, ())})
                    if dim == d and rs:
                        conds.append(
                            f"(r.variant = {_s(variant)} AND r.s = {_s(value)}"
                            f" AND r.rn IN ({', '.join(str(r) for r in rs)}))"
                        )
            if not conds:
                continue
            k = len(meta)
            selects.append(
                f"SELECT {k} AS k, r.variant AS variant, r.s AS s, r.rn AS rn, r.x AS x FROM"
                f" (SELECT v.tb_variant AS variant, v.tb_sv{d} AS s, v.{col} AS x, ROW_NUMBER()"
                f" OVER (PARTITION BY v.tb_variant, v.tb_sv{d} ORDER BY v.{col}) AS rn"
                f" FROM tb_v v) r WHERE {' OR '.join(conds)}"
            )
            meta.append((m.key, d))
    if not selects:
        return None
    sql = per_unit.sql + " " + " UNION ALL ".join(selects)
    return render(dialect, sql, exposures, events), meta


def counts_sql(dialect: str, exposures: Source, plan: Plan) -> str:
    """Units per variant: ``variant, total, multiple, overridden, analysed`` (one GROUP BY; on
    the SQLite store the units are read in variant order from its index, so it streams)."""
    flat = replace(plan, dimensions=())
    sql = f"{_units_ctes(exposures, flat)} {_counts_select(exposures, flat)}"
    return render(dialect, sql, exposures, None)


def _counts_select(exposures: Source, plan: Plan) -> str:
    """The ``SELECT`` of :func:`counts_sql` over ``tb_eu``."""
    overridden = (
        f"CASE WHEN eu.tb_unit IN {_in_list(list(plan.overrides))} THEN 1 ELSE 0 END"
        if plan.overrides
        else "0"
    )
    cut = (
        f" WHERE eu.tb_first < {_at(exposures, plan.until_us)}" if plan.until_us is not None else ""
    )
    return (
        "SELECT eu.tb_variant AS variant, COUNT(*) AS total, SUM(eu.tb_multi) AS multiple,"
        f" SUM({overridden}) AS overridden,"
        f" SUM(CASE WHEN eu.tb_multi = 0 AND {overridden} = 0 THEN 1 ELSE 0 END) AS analysed"
        f" FROM tb_eu eu{cut} GROUP BY eu.tb_variant"
    )


def slice_counts_sql(dialect: str, exposures: Source, plan: Plan, dimension: str) -> str:
    """Analysed units per raw value of one dimension: ``value, n`` (NULL: no value)."""
    flat = replace(plan, dimensions=((dimension, ()),))
    sql = (
        f"{_units_ctes(exposures, flat, raw=True)}"
        " SELECT eu.tb_sv0 AS value, COUNT(*) AS n FROM tb_eu eu"
        f" WHERE {_analysed(exposures, flat)} GROUP BY eu.tb_sv0"
    )
    return render(dialect, sql, exposures, None)


def newest_sql(dialect: str, exposures: Side, events: Side, plan: Plan) -> str:
    """The newest exposure or event time (epoch µs) the plan reads: ``newest`` (a snapshot's
    ``data_until``); the experiment's exposures and its metrics' events, within the stop and
    the time cut."""
    names = _event_names(plan.metrics)
    fixed = _fixed_bounds(plan)
    cut = f" WHERE xs.tb_ts < {int(plan.until_us)}" if plan.until_us is not None else ""
    ctes = [_exposures_cte(exposures, plan, []), _events_cte(events, names or ["\x00none"], fixed)]
    sql = (
        f"WITH {', '.join(ctes)}"
        f" SELECT MAX(m.t) AS newest FROM (SELECT MAX(xs.tb_ts) AS t FROM tb_xs xs{cut}"
        " UNION ALL SELECT MAX(c.c_ts) AS t FROM tb_ev c) m"
    )
    return render(dialect, sql, exposures, events)


def probe_sql(dialect: str, side: Side, events: bool) -> str:
    """A statement that reads no row of a side's table or SQL (its columns, for the mapping)."""
    placeholder = _EVENTS if events else _EXPOSURES
    sql = f"SELECT * FROM {placeholder} s WHERE 1 = 0"
    return render(dialect, sql, None if events else side, side if events else None)


# ------------------------------------------------------------------------------- rendering


def _source(dialect: str, side: Side) -> exp.Expression:
    """The organisation's table or SQL, parsed in its engine's dialect."""
    if side.sql is not None:
        return exp.Subquery(this=sqlglot.parse_one(side.sql, read=dialect))
    assert side.table is not None
    return exp.to_table(side.table, dialect=dialect)


def render(dialect: str, sql: str, exposures: Source | None, events: Side | None) -> str:
    """The canonical ``sql`` with its placeholders replaced, rendered in ``dialect``."""
    key = (dialect, sql, repr(exposures), repr(events))
    cached = _RENDERED.get(key)
    if cached is not None:
        return cached
    tree = sqlglot.parse_one(sql, read=_CANONICAL)
    sources: dict[str, Source | None] = {_EXPOSURES: exposures, _EVENTS: events}

    def substitute(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Anonymous) and str(node.this).lower() in _PLACEHOLDER_FNS:
            name = str(node.this).lower()
            args = list(node.expressions)
            if name == _EPOCH_FN:
                text = _EPOCH_US[dialect].format(x=_EPOCH_ARG)
            else:  # the constant argument: tb_time(µs), tb_shift(ts, µs), tb_attr(x, 'name')
                constant = args[-1] if name in (_TIME_FN, _SHIFT_FN, _ATTR_FN) else None
                literal = None
                if constant is not None:
                    literal = constant.name if constant.is_string else constant.sql()
                text = _store_template(dialect, name, literal)
            out = _template(dialect, text).copy()
            if name != _TIME_FN:
                for col in list(out.find_all(exp.Column)):
                    if col.name == _EPOCH_ARG:
                        col.replace(args[0].copy())
            return out
        if isinstance(node, exp.Table) and node.name in sources and not node.args.get("db"):
            side = sources[node.name]
            if isinstance(side, Store):
                return node
            assert side is not None
            src = _source(dialect, side)
            alias = node.args.get("alias")
            if isinstance(src, exp.Subquery):
                src.set("alias", alias)
                return src
            src.set("alias", alias)
            return src
        return node

    out: exp.Expression = tree.transform(substitute, copy=True)
    if dialect == "clickhouse":
        _clickhouse_not_null(out)
    rendered: str = out.sql(dialect=dialect)
    if len(_RENDERED) > 256:  # the statements of a few experiments' refreshes
        _RENDERED.clear()
    _RENDERED[key] = rendered
    return rendered


def _clickhouse_not_null(tree: exp.Expression) -> None:
    """ClickHouse casts to ``Nullable(T)`` unless told the value cannot be NULL, and a Nullable
    join key, grouping key or sum is several times slower than a plain one (at 2M units, the
    units already on the join's right: 9.1 s with them, 6.5 s without). Casts that cannot see
    a NULL are made plain: a literal's, a ``COALESCE`` ending in a literal's, and a column's that
    its SELECT's ``WHERE`` requires to be NOT NULL (read through ``assumeNotNull``, which never
    fails on the rows that ``WHERE`` drops)."""
    for cast in list(tree.find_all(exp.Cast)):
        to, this = cast.to, cast.this
        if to.args.get("nullable") is not None:
            continue  # the statement's own choice (an organisation's SQL)
        if isinstance(this, exp.Literal) or (
            isinstance(this, exp.Coalesce)
            and this.expressions
            and isinstance(this.expressions[-1], exp.Literal)
        ):
            to.set("nullable", False)
        elif isinstance(this, exp.Column) and _where_not_null(cast, this):
            cast.set("this", exp.Anonymous(this="assumeNotNull", expressions=[this.copy()]))
            to.set("nullable", False)


def _where_not_null(node: exp.Expression, column: exp.Column) -> bool:
    """Whether the WHERE of ``node``'s SELECT has the conjunct ``column IS NOT NULL``."""
    select = node.find_ancestor(exp.Select)
    where = select.args.get("where") if select is not None else None
    if where is None:
        return False
    wanted = column.sql()
    for term in where.this.flatten() if isinstance(where.this, exp.And) else [where.this]:
        if (
            isinstance(term, exp.Not)
            and isinstance(term.this, exp.Is)
            and isinstance(term.this.expression, exp.Null)
            and term.this.this.sql() == wanted
        ):
            return True
    return False


_RENDERED: dict[tuple[str, str, str, str], str] = {}
_EPOCH_ARG = "tb_epoch_argument"
_TEMPLATES: dict[tuple[str, str], exp.Expression] = {}


def _template(dialect: str, text: str) -> exp.Expression:
    """A placeholder's replacement (``text`` in ``dialect``, over the column ``_EPOCH_ARG``),
    parsed once."""
    key = (dialect, text)
    if key not in _TEMPLATES:
        if len(_TEMPLATES) > 512:
            _TEMPLATES.clear()
        parsed: Any = sqlglot.parse_one(text, read=dialect)
        _TEMPLATES[key] = parsed
    return _TEMPLATES[key]


_Reader = Callable[[str], list[tuple[object, ...]]]

# Statement types that read only (a WITH is an attribute of its SELECT in sqlglot).
_READ_ONLY = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Subquery)
_WRITES = (
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.Command,
    exp.TruncateTable,
    exp.Into,
    exp.Set,
    exp.Pragma,
    exp.Use,
    exp.Copy,
    exp.LoadData,
)


def read_only_problem(sql: str, dialect: str) -> str | None:
    """Why ``sql`` is not one read-only SELECT (None when it is): parsed with sqlglot in the
    engine's dialect; anything but a single SELECT (WITH, UNION …) without a write inside is
    refused."""
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except sqlglot.errors.ParseError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        return f"it does not parse as {dialect} SQL ({first[:200]})"
    if len(statements) != 1:
        return f"it holds {len(statements)} statements; give exactly one SELECT"
    stmt = statements[0]
    if not isinstance(stmt, _READ_ONLY):
        return f"it is a {stmt.key.upper()} statement; only SELECT (or WITH … SELECT) is allowed"
    for node in stmt.walk():
        if isinstance(node, _WRITES):
            return f"it contains a {node.key.upper()}; only reads are allowed"
    return None
