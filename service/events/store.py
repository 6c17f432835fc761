"""The SQL of event ingestion: the statements that read experiments, insert events idempotently
and maintain ``exposure_unit``, beside the tables of :mod:`service.events.models`.

SQLite: multi-row ``INSERT ... VALUES (...), ... ON CONFLICT(event_id) DO NOTHING`` of a few
fixed sizes (:mod:`service.events.tuning` says why); PostgreSQL: ``COPY`` into a temporary
staging table, then ``INSERT ... SELECT ... ORDER BY event_id ON CONFLICT DO NOTHING``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlmodel import Session

from service.events.tuning import ROWS_PER_LOOKUP, SQLITE_CHUNKS

__all__ = [
    "CONVERSION_COLUMNS",
    "EXPOSURE_COLUMNS",
    "UNIT_COLUMNS",
    "UNIT_MERGE",
    "Store",
    "Target",
    "sqlite_ts",
]

EXPOSURE_COLUMNS = (
    "event_id",
    "experiment_id",
    "phase",
    "variant",
    "unit_id",
    "ts",
    "received_at",
    "payload_hash",
    "late",
)
CONVERSION_COLUMNS = ("event_id", "name", "unit_id", "value", "ts", "received_at", "payload_hash")
UNIT_COLUMNS = (
    "experiment_id",
    "phase",
    "unit_id",
    "variant",
    "first_ts",
    "multiple",
    "attributes",
)
# The upsert of a first exposure: the earliest keeps its variant; several variants: ``multiple``.
UNIT_MERGE = (
    "ON CONFLICT (experiment_id, phase, unit_id) DO UPDATE SET "
    "multiple = (exposure_unit.multiple OR excluded.multiple "
    "OR exposure_unit.variant <> excluded.variant), "
    "attributes = CASE WHEN excluded.first_ts < exposure_unit.first_ts "
    "THEN excluded.attributes ELSE exposure_unit.attributes END, "
    "variant = CASE WHEN excluded.first_ts < exposure_unit.first_ts "
    "THEN excluded.variant ELSE exposure_unit.variant END, "
    "first_ts = CASE WHEN excluded.first_ts < exposure_unit.first_ts "
    "THEN excluded.first_ts ELSE exposure_unit.first_ts END"
)
# PostgreSQL staging tables for COPY: the inserted columns in row order (no id, no constraints).
STAGE_COLUMNS = {
    "exposure": "event_id text, experiment_id integer, phase integer, variant text, unit_id text, "
    "ts timestamptz, received_at timestamptz, payload_hash text, late boolean",
    "conversion": "event_id text, name text, unit_id text, value double precision, "
    "ts timestamptz, received_at timestamptz, payload_hash text",
    "exposure_unit": "experiment_id integer, phase integer, unit_id text, variant text, "
    "first_ts timestamptz, multiple boolean, attributes json",
}


@dataclass
class Target:
    """An experiment as ingestion reads it: its phases' variants and which phases ended."""

    id: int
    status: str
    phase: int
    variants: dict[int, frozenset[str]] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)
    dimensions: tuple[str, ...] = ()  # kept with a unit's first exposure (§12)


def sqlite_ts(ts: datetime) -> str:
    """The text SQLAlchemy's SQLite ``DateTime`` stores (fixed width, so it sorts as time)."""
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


@lru_cache(maxsize=64)
def _multi_row_sql(head: str, tail: str, width: int, rows: int) -> str:
    """``head VALUES (?, ...), ... tail`` for ``rows`` rows of ``width`` values."""
    one = "(" + ",".join("?" * width) + ")"
    return f"{head} VALUES {','.join([one] * rows)} {tail}"


class Store:
    """Dialect-specific statements on the session's driver connection (same transaction)."""

    def __init__(self, session: Session) -> None:
        connection = session.connection()
        self.sqlite = connection.dialect.name == "sqlite"
        self.raw: Any = connection.connection.driver_connection
        self.mark = "?" if self.sqlite else "%s"

    def targets(self, keys: Collection[str]) -> dict[str, Target]:
        """The experiments with these keys, their phases' variants and which phases ended."""
        if not keys:
            return {}
        marks = ",".join([self.mark] * len(keys))
        cur = self.raw.cursor()
        try:
            cur.execute(
                "SELECT e.id, e.key, e.status, e.phase, p.phase, p.variants, p.ended_at, "
                "e.dimensions "
                "FROM experiment e LEFT JOIN experiment_phase p ON p.experiment_id = e.id "
                f"WHERE e.key IN ({marks})",
                sorted(keys),
            )
            rows = cur.fetchall()
        finally:
            cur.close()
        out: dict[str, Target] = {}
        for exp_id, key, status, current, number, variants, ended_at, dims in rows:
            target = out.get(key)
            if target is None:
                if isinstance(dims, str | bytes):
                    dims = json.loads(dims)
                target = out[key] = Target(
                    id=int(exp_id), status=status, phase=int(current), dimensions=tuple(dims or ())
                )
            if number is None:
                continue
            if isinstance(variants, str | bytes):  # SQLite keeps JSON as text
                variants = json.loads(variants)
            target.variants[int(number)] = frozenset(v["key"] for v in variants)
            if ended_at is not None:
                target.ended.add(int(number))
        return out

    def insert_new(
        self,
        table: str,
        columns: tuple[str, ...],
        rows: Sequence[tuple[Any, ...]],
        flat: list[Any] | None = None,
    ) -> set[str] | None:
        """Insert rows whose ``event_id`` (first column) is new; return the ids inserted.

        ``rows`` must not repeat an ``event_id``. ``flat`` is the rows' values in one list
        (SQLite; made from ``rows`` if not given). ``None`` means every row was inserted (the
        common case, answered without a query).
        """
        if not rows:
            return None
        names = ", ".join(columns)
        if self.sqlite:
            # The transaction holds SQLite's write lock (BEGIN IMMEDIATE), and SQLite gives a
            # new row the rowid one above the table's largest: the k rows inserted here are the
            # k rowids up to the last one inserted. When every row is new (the common case) no
            # query is needed; each statement costs the writer a wait for the GIL.
            cur = self.raw.cursor()
            try:
                before = self.raw.total_changes
                self.insert_flat(
                    cur,
                    f"INSERT INTO {table} ({names})",
                    "ON CONFLICT(event_id) DO NOTHING",
                    len(columns),
                    flat if flat is not None else [v for row in rows for v in row],
                )
                changed = self.raw.total_changes - before
                if changed == len(rows):
                    return None
                if changed == 0:
                    return set()
                cur.execute(
                    f"SELECT event_id FROM {table} WHERE id > ?", (cur.lastrowid - changed,)
                )
                return {r[0] for r in cur.fetchall()}
            finally:
                cur.close()
        stage = self._stage(table, rows)
        with self.raw.cursor() as cur:
            # Sorted so that concurrent transactions take the unique index's row locks in the
            # same order: they wait for each other instead of deadlocking.
            cur.execute(
                f"INSERT INTO {table} ({names}) SELECT {names} FROM {stage} ORDER BY event_id "
                "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
            )
            inserted = {r[0] for r in cur.fetchall()}
        return None if len(inserted) == len(rows) else inserted

    @staticmethod
    def insert_flat(cur: Any, head: str, tail: str, width: int, flat: list[Any]) -> None:
        """SQLite: insert ``flat`` (rows of ``width`` values) with multi-row statements.

        Full statements of ``SQLITE_CHUNKS[0]`` rows, then the rest in one statement of the
        smallest size that holds it, padded with copies of its last row, which the statement's
        own ``ON CONFLICT`` makes no-ops. Why not ``executemany``, and why fixed sizes: see
        :mod:`service.events.tuning`.
        """
        n = len(flat) // width
        big = SQLITE_CHUNKS[0]
        sql = _multi_row_sql(head, tail, width, big)
        pos = 0
        while n - pos >= big:
            cur.execute(sql, flat[pos * width : (pos + big) * width])
            pos += big
        rest = n - pos
        if rest:  # one statement of the smallest size that holds the rest, padded
            size = next(size for size in reversed(SQLITE_CHUNKS) if size >= rest)
            last = flat[(n - 1) * width : n * width]
            cur.execute(
                _multi_row_sql(head, tail, width, size),
                flat[pos * width :] + last * (size - rest),
            )

    def _stage(self, table: str, rows: Iterable[tuple[Any, ...]]) -> str:
        """PostgreSQL: ``COPY`` the rows into the transaction's staging table; return its name."""
        stage = f"tb_stage_{table}"
        with self.raw.cursor() as cur:
            cur.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} ({STAGE_COLUMNS[table]}) "
                "ON COMMIT DELETE ROWS"
            )
            cur.execute(f"TRUNCATE {stage}")
            with cur.copy(f"COPY {stage} FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        return stage

    def stored_hashes(self, table: str, event_ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        cur = self.raw.cursor()
        try:
            for start in range(0, len(event_ids), ROWS_PER_LOOKUP):
                ids = event_ids[start : start + ROWS_PER_LOOKUP]
                marks = ",".join([self.mark] * len(ids))
                cur.execute(
                    f"SELECT event_id, payload_hash FROM {table} WHERE event_id IN ({marks})", ids
                )
                out.update((r[0], r[1]) for r in cur.fetchall())
        finally:
            cur.close()
        return out

    def upsert_units(self, rows: list[tuple[Any, ...]], flat: list[Any] | None = None) -> None:
        """Merge first exposures into ``exposure_unit`` (earliest wins; flag several variants).

        SQLite applies the upsert row after row, so ``rows`` (or ``flat``, the same values in
        one list) may hold a key more than once. PostgreSQL needs one row per key (see
        :func:`service.events.plan.merge_units`), sorted by key so that concurrent transactions
        lock in the same order.
        """
        if not rows:
            return
        names = ", ".join(UNIT_COLUMNS)
        merge = UNIT_MERGE
        if self.sqlite:
            cur = self.raw.cursor()
            try:
                self.insert_flat(
                    cur,
                    f"INSERT INTO exposure_unit ({names})",
                    merge,
                    len(UNIT_COLUMNS),
                    flat if flat is not None else [v for row in rows for v in row],
                )
            finally:
                cur.close()
            return
        # One set-based statement over the COPY-staged rows.
        stage = self._stage("exposure_unit", sorted(rows, key=lambda r: (r[0], r[1], r[2])))
        with self.raw.cursor() as cur:
            cur.execute(
                f"INSERT INTO exposure_unit ({names}) SELECT {names} FROM {stage} "
                f"ORDER BY experiment_id, phase, unit_id {merge}"
            )
