"""The analysis of an experiment on its data source: an ``Aggregator`` over the warehouse.

:class:`SourceAggregator` answers what ``service.analysis.aggregate`` answers for the built-in
store (unit counts, per-variant sums with the winsorization cut points, slice sums and counts,
quantile order statistics) with the statements of :mod:`service.analysis.query` rendered in the
source's dialect and run there; only those aggregates come back.

Before its first statement it reads the columns of both sides (a statement that returns no row)
and refuses a mapping to a column the table or SQL does not have (:class:`ColumnNotFoundError`,
naming the field), resolving the names' case as the engine spells them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session, select

from service.analysis.aggregate import (
    ExposureCounts,
    MetricSpec,
    MetricSums,
    SliceOrderStatistics,
    SliceRanks,
    Window,
    cut_points,
    metric_sums_of,
)
from service.analysis.query import (
    DIALECTS,
    Plan,
    Side,
    counts_sql,
    counts_sums_sql,
    cuts_sql,
    epoch_us,
    newest_sql,
    order_statistics_sql,
    plan_of,
    probe_sql,
    slice_counts_sql,
    slice_order_statistics_sql,
    sums_sql,
)
from service.errors import FieldError, NotFoundError
from service.warehouse import engines
from service.warehouse.engines import Engine, WarehouseError
from service.warehouse.models import BUILTIN, DataSource

__all__ = [
    "ColumnNotFoundError",
    "SourceAggregator",
    "aggregator_for",
    "check_columns",
    "open_source",
    "sides_of",
]


class ColumnNotFoundError(WarehouseError):
    status = 422
    code = "column_not_found"
    title = "The mapping names a column the source does not have"


def sides_of(row: DataSource) -> tuple[Side, Side]:
    """The stored mapping as the query builder's two sides."""

    def side(blob: Mapping[str, Any], attributes: bool) -> Side:
        cols = dict(blob.get("columns") or {})
        attrs = dict(cols.pop("attributes", None) or {}) if attributes else {}
        return Side(
            columns={k: str(v) for k, v in cols.items() if v is not None},
            table=blob.get("table"),
            sql=blob.get("sql"),
            attributes={str(k): str(v) for k, v in attrs.items()},
        )

    return side(row.exposures, True), side(row.events, False)


def check_columns(
    key: str, conn: Engine, exposures: Side, events: Side, timeout: float
) -> tuple[Side, Side, dict[str, list[str]], dict[str, str]]:
    """Both sides with their column names as the source spells them; the source's columns;
    the probe statements. Raises :class:`ColumnNotFoundError` naming every unknown column."""
    errors: list[FieldError] = []
    found: dict[str, list[str]] = {}
    probes: dict[str, str] = {}
    resolved: list[Side] = []
    for name, side, is_events in (("exposures", exposures, False), ("events", events, True)):
        sql = probe_sql(conn.dialect, side, is_events)
        probes[name] = sql
        columns, _rows = engines.run(key, conn, sql, timeout)
        found[name] = columns

        cols = {
            field: _real(name, field, column, columns, errors)
            for field, column in side.columns.items()
        }
        attrs = {
            a: _real(name, f"attributes.{a}", column, columns, errors)
            for a, column in side.attributes.items()
        }
        resolved.append(Side(columns=cols, table=side.table, sql=side.sql, attributes=attrs))
    if errors:
        raise ColumnNotFoundError(
            f"The mapping of data source '{key}' names "
            f"{len(errors)} column(s) its tables do not have: "
            + "; ".join(f"{e.field}: {e.message}" for e in errors),
            errors=errors,
        )
    return resolved[0], resolved[1], found, probes


def _real(side: str, field: str, column: str, columns: list[str], errors: list[FieldError]) -> str:
    """The source's spelling of ``column`` (case-insensitive match), or an error noted."""
    if column in columns:
        return column
    by_lower = {c.lower(): c for c in columns}
    if column.lower() in by_lower:
        return by_lower[column.lower()]
    errors.append(
        FieldError(
            field=f"{side}.columns.{field}",
            message=f"no column {column!r} in the source's {side}; its columns are "
            f"{', '.join(columns) or '(none)'}",
            type="column_not_found",
        )
    )
    return column


@contextmanager
def open_source(row: DataSource) -> Iterator[tuple[Engine, Side, Side]]:
    """A connection to the source and its checked mapping."""
    exposures, events = sides_of(row)
    timeout = float(row.timeout_seconds)
    with engines.connect(row.key, row.engine, row.connection, timeout) as conn:
        exposures, events, _found, _probes = check_columns(
            row.key, conn, exposures, events, timeout
        )
        yield conn, exposures, events


@dataclass
class SourceAggregator:
    """An experiment's aggregation on its data source (see the module docstring)."""

    key: str  # the source's key
    conn: Engine
    exposures: Side
    events: Side
    experiment: str  # the experiment's key, as the source's exposures name it
    phase_start_us: int | None
    timeout: float

    @property
    def dialect(self) -> str:
        return DIALECTS[self.engine_name]

    @property
    def engine_name(self) -> str:
        return {v: k for k, v in DIALECTS.items()}[self.conn.dialect]

    def _plan(self, window: Window, metrics: Sequence[MetricSpec] = ()) -> Plan:
        return plan_of(window, metrics, self.experiment, self.phase_start_us)

    def _run(self, sql: str) -> list[tuple[Any, ...]]:
        return engines.run(self.key, self.conn, sql, self.timeout)[1]

    def count_exposures(self, window: Window) -> ExposureCounts:
        rows = self._run(counts_sql(self.conn.dialect, self.exposures, self._plan(window)))
        return _counts_of(rows)

    def counts_and_sums(
        self, metrics: Sequence[MetricSpec], window: Window
    ) -> tuple[ExposureCounts, dict[str, dict[str, MetricSums]] | None]:
        """The unit counts and, in the same statement, the variant sums (the exposures grouped
        by unit once, not once per statement); with a winsorized metric (its cut points need
        the counts first) or a slice, the counts alone and None."""
        flat = replace(window, dimensions=())
        if not metrics or window.dimensions or any(m.winsorized for m in metrics):
            return self.count_exposures(flat), None
        plan = self._plan(flat, metrics)
        sql, alias_of = counts_sums_sql(self.conn.dialect, self.exposures, self.events, plan)
        columns, rows = engines.run(self.key, self.conn, sql, self.timeout)
        sums = _sums_of(metrics, alias_of, columns, rows, 0)
        return _counts_of(rows), sums.get((), {m.key: {} for m in metrics})

    def data_until(self, window: Window, metrics: Sequence[MetricSpec]) -> datetime | None:
        """The newest exposure or event the source holds for the experiment and its metrics
        (within the stop and the time cut): a snapshot's ``data_until``; None when it holds
        none."""
        rows = self._run(
            newest_sql(self.conn.dialect, self.exposures, self.events, self._plan(window, metrics))
        )
        newest = rows[0][0] if rows else None
        if newest is None:
            return None
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(newest))

    def _cuts(
        self, plan: Plan, n_units: int
    ) -> dict[tuple[str, str], tuple[float | None, float | None]]:
        got = cuts_sql(self.conn.dialect, self.exposures, self.events, plan, n_units)
        if got is None:
            return {}
        sql, wanted = got
        values: dict[int, list[float]] = {}
        for k, _rn, x in self._run(sql):
            values.setdefault(int(k), []).append(float(x))
        return cut_points(wanted, values)

    def slice_sums(
        self,
        metrics: Sequence[MetricSpec],
        window: Window,
        n_units: int,
        variants: Sequence[str] | None = None,
    ) -> dict[tuple[str, ...], dict[str, dict[str, MetricSums]]]:
        if not metrics:
            return {}
        plan = self._plan(window, metrics)
        cuts = self._cuts(plan, n_units)
        sql, alias_of = sums_sql(self.conn.dialect, self.exposures, self.events, plan, cuts)
        columns, rows = engines.run(self.key, self.conn, sql, self.timeout)
        return _sums_of(metrics, alias_of, columns, rows, len(plan.dimensions))

    def variant_sums(
        self,
        metrics: Sequence[MetricSpec],
        window: Window,
        n_units: int,
        variants: Sequence[str] | None = None,
    ) -> dict[str, dict[str, MetricSums]]:
        flat = replace(window, dimensions=())
        grouped = self.slice_sums(metrics, flat, n_units, variants)
        return grouped.get((), {m.key: {} for m in metrics})

    def slice_counts(self, window: Window, dimension: str) -> dict[str | None, int]:
        sql = slice_counts_sql(self.conn.dialect, self.exposures, self._plan(window), dimension)
        return {(None if r[0] is None else str(r[0])): int(r[1]) for r in self._run(sql)}

    def quantile_order_statistics(
        self,
        metrics: Sequence[MetricSpec],
        window: Window,
        ranks: dict[str, dict[str, tuple[int, ...]]],
    ) -> dict[str, dict[str, dict[int, float]]]:
        out: dict[str, dict[str, dict[int, float]]] = {m.key: {} for m in metrics}
        if not metrics:
            return out
        plan = self._plan(window, metrics)
        got = order_statistics_sql(
            self.conn.dialect,
            self.exposures,
            self.events,
            plan,
            {v: dict(r) for v, r in ranks.items()},
        )
        if got is None:
            return out
        sql, keys = got
        for k, variant, rn, x in self._run(sql):
            out[keys[int(k)]].setdefault(str(variant), {})[int(rn)] = float(x)
        return out

    def slice_order_statistics(
        self, metrics: Sequence[MetricSpec], window: Window, ranks: SliceRanks
    ) -> SliceOrderStatistics:
        out: SliceOrderStatistics = {s: {m.key: {} for m in metrics} for s in ranks}
        if not metrics or not ranks:
            return out
        plan = self._plan(window, metrics)
        got = slice_order_statistics_sql(
            self.conn.dialect,
            self.exposures,
            self.events,
            plan,
            {s: {v: dict(r) for v, r in per.items()} for s, per in ranks.items()},
        )
        if got is None:
            return out
        sql, meta = got
        for k, variant, value, rn, x in self._run(sql):
            key, d = meta[int(k)]
            slot = out.get((d, str(value)))
            if slot is not None:
                slot[key].setdefault(str(variant), {})[int(rn)] = float(x)
        return out


def _sums_of(
    metrics: Sequence[MetricSpec],
    alias_of: dict[str, str],
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    n_dims: int,
) -> dict[tuple[str, ...], dict[str, dict[str, MetricSums]]]:
    """``{slice combination: {metric key: {variant: MetricSums}}}`` of a sums statement's rows
    (``variant``, then ``n_dims`` slice buckets, then ``n`` and the sums by name; a row with
    ``n`` 0 or NULL, a variant without analysed units, is left out)."""
    index = {c.lower(): i for i, c in enumerate(columns)}
    out: dict[tuple[str, ...], dict[str, dict[str, MetricSums]]] = {}
    for row in rows:
        n = int(row[index["n"]] or 0)
        if n == 0:
            continue
        variant = str(row[0])
        combo = tuple(str(row[1 + k]) for k in range(n_dims))
        per_metric = out.setdefault(combo, {m.key: {} for m in metrics})

        def column(name: str, row: tuple[Any, ...] = row) -> Any:
            return row[index[name.lower()]]

        for key, sums in metric_sums_of(metrics, alias_of, n, column).items():
            per_metric[key][variant] = sums
    return out


def _counts_of(rows: Sequence[tuple[Any, ...]]) -> ExposureCounts:
    """ExposureCounts of rows that begin ``variant, total, multiple, overridden, analysed``."""
    return ExposureCounts(
        units={str(r[0]): int(r[4] or 0) for r in rows},
        multiple_exposures=sum(int(r[2] or 0) for r in rows),
        overridden_units=sum(int(r[3] or 0) for r in rows),
    )


def source_row(session: Session, key: str) -> DataSource:
    row = session.exec(select(DataSource).where(DataSource.key == key)).first()
    if row is None:
        raise NotFoundError(f"No data source '{key}'.", code="data_source_not_found")
    return row


@contextmanager
def aggregator_for(session: Session, exp: Any) -> Iterator[SourceAggregator | None]:
    """The experiment's data source as an aggregator, open for a refresh; None for the
    built-in store."""
    key = getattr(exp, "data_source", None)
    if key is None or key == BUILTIN:
        yield None
        return
    row = source_row(session, key)
    from service.experiments import service as experiments

    phase = experiments.current_phase(session, exp)
    started = phase.started_at if phase is not None else exp.started_at
    with open_source(row) as (conn, exposures, events):
        yield SourceAggregator(
            key=row.key,
            conn=conn,
            exposures=exposures,
            events=events,
            experiment=exp.key,
            phase_start_us=None if started is None else epoch_us(started),
            timeout=float(row.timeout_seconds),
        )
