"""The built-in store's aggregation: the one query builder (``service.analysis.query``) over
``exposure_unit`` and ``conversion``, run in the service's own database (SQLite, PostgreSQL).

The statements are those every data source runs (:class:`service.analysis.query.Store` in place
of the organisation's tables): per-variant sufficient statistics, the pooled winsorization cut
points, the quantile metrics' order statistics, unit counts, slices; only those aggregates leave
the database. What is the store's own is how they run, for speed (``bench/results.py``; issue
7) and exactness:

- the per-unit values are one ``LEFT JOIN`` of each unit with its conversions in its window,
  read in ``unit_id`` order from both indexes (migration 0003's covering index ``conversion
  (unit_id, ts, name, value)``), so the grouping streams (see ``query._store_per_unit``);
- SQLite runs the sums once per variant over the index ``exposure_unit (experiment_id, phase,
  variant, unit_id, first_ts, multiple)`` (migration 0005): SQLite has no hash aggregate, and
  a per-variant ``GROUP BY`` of every unit would sort them;
- PostgreSQL runs with transaction-local planner settings (no hash join, no JIT) and, for a
  large experiment, splits the units into ranges of ``unit_id`` aggregated side by side
  (Parallel Append) and summed;
- PostgreSQL raises on a double overflow where SQLite reaches ``inf``: the sums then run again
  in ``numeric`` (exact), read back as floats.

Winsorization cut points are *pooled over all arms* (as GrowthBook caps a metric), from the
per-unit values of the analysed units (zeros included), numpy's default (linear) percentile from
the two order statistics around it (``service.analysis.spec.cut_points``). The pre-period value
is capped at its metric's cut points; a ratio caps numerator and denominator at their own.
Binomial metrics (0/1) are never capped.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from service.analysis.query import (
    Store,
    counts_sql,
    cuts_sql,
    order_statistics_sql,
    partitioned_sums_sql,
    plan_of,
    slice_counts_sql,
    slice_order_statistics_sql,
    sums_sql,
)
from service.analysis.spec import (
    OTHER,
    UNKNOWN,
    Cuts,
    CutWanted,
    ExposureCounts,
    MetricSpec,
    MetricSums,
    Window,
    cut_points,
    cuts_wanted,
    kind_of,
    metric_sums_of,
    percentile_linear,
    sum_terms,
)

__all__ = [
    "OTHER",
    "UNKNOWN",
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

NUMERIC_OUT_OF_RANGE = "22003"  # PostgreSQL SQLSTATE of a float8 overflow

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


def _dialect(session: Session) -> str:
    name = session.get_bind().dialect.name
    return "postgres" if name == "postgresql" else name


def _execute(session: Session, sql: str, settings: dict[str, str] | None = None) -> Any:
    """Run a rendered statement (its literals inline: no parameter, so every ``:`` is text)
    with PostgreSQL ``settings`` (default :data:`_PG_SETTINGS`), restored afterwards."""
    conn = session.connection()
    stmt = text(sql.replace(":", "\\:"))
    if _dialect(session) != "postgres":
        return conn.execute(stmt).all()
    settings = _PG_SETTINGS if settings is None else settings
    names = list(settings)
    old = [conn.execute(text("SELECT current_setting(:n)"), {"n": n}).scalar_one() for n in names]
    setting = text("SELECT set_config(:n, :v, true)")
    for n in names:
        conn.execute(setting, {"n": n, "v": settings[n]})
    # On an error the transaction (or the savepoint of ``_sums``) is rolled back, and the
    # settings with it: nothing to restore, and nothing could run in the failed transaction.
    rows = conn.execute(stmt).all()
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
    """Units per variant after the exclusions, and how many were excluded (one GROUP BY)."""
    sql = counts_sql(_dialect(session), Store(window.experiment_id), plan_of(window))
    rows = _execute(session, sql, {})
    return ExposureCounts(
        units={str(r.variant): int(r.analysed or 0) for r in rows},
        multiple_exposures=sum(int(r.multiple or 0) for r in rows),
        overridden_units=sum(int(r.overridden or 0) for r in rows),
    )


def slice_counts(session: Session, window: Window, dimension: str) -> dict[str | None, int]:
    """Analysed units per raw value of attribute ``dimension`` (None: the unit has no value)."""
    sql = slice_counts_sql(
        _dialect(session), Store(window.experiment_id), plan_of(window), dimension
    )
    rows = _execute(session, sql, {})
    return {(None if r.value is None else str(r.value)): int(r.n) for r in rows}


def _store(window: Window, **kw: Any) -> Store:
    return Store(window.experiment_id, also_in=window.also_in, **kw)


def _cut_points(
    session: Session, metrics: Sequence[MetricSpec], window: Window, n_units: int, exact: bool
) -> Cuts:
    """Pooled winsorization cut points per (metric key, part suffix): (low, high)."""
    got = cuts_sql(
        _dialect(session), _store(window, exact=exact), None, plan_of(window, metrics), n_units
    )
    if got is None:
        return {}
    sql, wanted = got
    values: dict[int, list[float]] = {}
    for k, _rn, x in _execute(session, sql):
        values.setdefault(int(k), []).append(float(x))
    return cut_points(wanted, values)


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
    if _dialect(session) != "postgres":
        return _variant_sums(session, metrics, window, n_units, variants)
    try:
        with session.connection().begin_nested():
            return _variant_sums(session, metrics, window, n_units, variants)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != NUMERIC_OUT_OF_RANGE:
            raise
    return _variant_sums(session, metrics, window, n_units, variants, exact=True)


def _variant_sums(
    session: Session,
    metrics: Sequence[MetricSpec],
    window: Window,
    n_units: int,
    variants: Sequence[str] | None,
    exact: bool = False,
) -> dict[tuple[str, ...], dict[str, dict[str, MetricSums]]]:
    """:func:`_sums` in double precision, or in numeric when ``exact``."""
    dialect = _dialect(session)
    cuts = _cut_points(session, metrics, window, n_units, exact)
    plan = plan_of(window, metrics)
    settings = None
    if dialect == "sqlite":  # one statement per variant (see the module docstring)
        if variants is None:
            variants = _variants(session, window)
        statements = [
            sums_sql(dialect, _store(window, variant=v, exact=exact), None, plan, cuts)
            for v in dict.fromkeys(variants)
        ]
    elif n_units >= PG_PARTITION_MIN_UNITS:
        # Units split by ranges of unit_id (a unit is in exactly one), each range aggregated on
        # its own, then the ranges summed: the ranges run in parallel workers.
        edges: list[str | None] = [
            None,
            *_unit_quantiles(session, window, n_units, PG_PARTITIONS),
            None,
        ]
        parts = [
            _store(window, units=(lo, hi), exact=exact) for lo, hi in itertools.pairwise(edges)
        ]
        statements = [partitioned_sums_sql(dialect, parts, plan, cuts)]
        settings = _PG_PARTITIONED
    else:
        statements = [sums_sql(dialect, _store(window, exact=exact), None, plan, cuts)]
    n_dims = len(window.dimensions)
    out: dict[tuple[str, ...], dict[str, dict[str, MetricSums]]] = {}
    for sql, alias_of in statements:
        for r in _execute(session, sql, settings):
            row = r._mapping
            n = int(row["n"])
            if n == 0:  # a variant without analysed units (per-variant statements)
                continue
            combo = tuple(str(row[f"tb_sv{k}"]) for k in range(n_dims))
            per_metric = out.setdefault(combo, {m.key: {} for m in metrics})
            sums = metric_sums_of(metrics, alias_of, n, row.__getitem__)
            for key, metric_sums in sums.items():
                per_metric[key][str(row["variant"])] = metric_sums
    return out


def quantile_order_statistics(
    session: Session,
    metrics: Sequence[MetricSpec],
    window: Window,
    ranks: dict[str, dict[str, tuple[int, ...]]],
) -> dict[str, dict[str, dict[int, float]]]:
    """Order statistics of the per-unit values of quantile metrics, per variant.

    ``ranks``: ``{variant: {metric key: (rank, ...)}}``, 1-based ranks among the variant's
    analysed units (``stats.quantile_ranks``). Returns ``{metric key: {variant: {rank:
    value}}}``. ``window.pre_period_days`` is ignored (quantiles have no CUPED); its time cut
    is not, so the order statistics are those of the units the ranks count. One statement
    (``query.order_statistics_sql``): only the wanted ranks leave the database; ties are
    numbered arbitrarily but their values are equal.
    """
    out: dict[str, dict[str, dict[int, float]]] = {m.key: {} for m in metrics}
    if not metrics:
        return out
    got = order_statistics_sql(
        _dialect(session),
        _store(window),
        None,
        plan_of(window, metrics),
        {v: dict(r) for v, r in ranks.items()},
    )
    if got is None:
        return out
    sql, keys = got
    for k, variant, rn, x in _execute(session, sql):
        out[keys[int(k)]].setdefault(str(variant), {})[int(rn)] = float(x)
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

    ``ranks``: ``{(k, value): {variant: {metric key: (rank, ...)}}}``, 1-based ranks among the
    variant's analysed units whose bucket of dimension ``k`` is ``value`` (a kept value,
    ``other`` or ``unknown``, as :func:`slice_sums` buckets them). Returns ``{(k, value):
    {metric key: {variant: {rank: value}}}}``, in one statement
    (``query.slice_order_statistics_sql``).
    """
    out: SliceOrderStatistics = {s: {m.key: {} for m in metrics} for s in ranks}
    if not metrics or not ranks:
        return out
    got = slice_order_statistics_sql(
        _dialect(session),
        _store(window),
        None,
        plan_of(window, metrics),
        {s: {v: dict(r) for v, r in per.items()} for s, per in ranks.items()},
    )
    if got is None:
        return out
    sql, meta = got
    for k, variant, value, rn, x in _execute(session, sql):
        key, d = meta[int(k)]
        slot = out.get((d, str(value)))
        if slot is not None:
            slot[key].setdefault(str(variant), {})[int(rn)] = float(x)
    return out


# ------------------------------------------------------------------------------ aggregators


class Aggregator(Protocol):
    """Where the sufficient statistics come from: the built-in store (:class:`StoreAggregator`,
    the functions above) or a data source (``service.warehouse.source.SourceAggregator``, the
    same aggregation rendered in the source's SQL dialect). Same arguments, same numbers."""

    def count_exposures(self, window: Window) -> ExposureCounts: ...

    def counts_and_sums(
        self, metrics: Sequence[MetricSpec], window: Window
    ) -> tuple[ExposureCounts, dict[str, dict[str, MetricSums]] | None]:
        """The unit counts and, when one statement gives both, the variant sums of
        ``metrics`` (None: ask :meth:`variant_sums`)."""
        ...

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

    def counts_and_sums(
        self, metrics: Sequence[MetricSpec], window: Window
    ) -> tuple[ExposureCounts, dict[str, dict[str, MetricSums]] | None]:
        # the store's sums statements need the counts first (one statement per variant on
        # SQLite, partitions by size on PostgreSQL)
        return count_exposures(self.session, window), None

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
