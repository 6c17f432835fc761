"""Event ingestion: validation, idempotent storage, first exposures per unit.

Flow of a ``POST /v1/events`` request (:func:`ingest_body`):

1. The body is parsed once with :func:`json.loads` and each event is validated on its own with a
   pydantic ``TypeAdapter``, so a malformed event is rejected with its index and the others go on.
   This happens before any database lock is taken.
2. A per-process gate bounds the requests waiting for the write lock; past it the request is shed
   with a 429 and ``Retry-After`` (setting ``TRIALBOOK_INGEST_MAX_CONCURRENCY``).
3. One write transaction (SQLite ``BEGIN IMMEDIATE``) resolves the experiments of the exposures,
   rejects unknown experiments, phases and variants, inserts the rows with the fastest idempotent
   statement of the database, compares the payload hash of every event that was already stored
   (same hash: duplicate; different: conflict, the stored event is kept), upserts
   ``exposure_unit`` for the newly inserted exposures, and commits. Only then is the answer sent,
   so a 2xx means the accepted events are durable.

Insert statements:

- SQLite: ``executemany`` of ``INSERT ... ON CONFLICT(event_id) DO NOTHING`` through the driver
  connection; the inserted rows are known from ``total_changes`` and, when some were already
  stored, from the rowids above the maximum before the insert (the write lock is held).
- PostgreSQL: ``COPY`` into a temporary staging table, then ``INSERT ... SELECT ... ORDER BY
  event_id ON CONFLICT (event_id) DO NOTHING RETURNING event_id``. The ordering (also used for the
  ``exposure_unit`` upsert) makes concurrent transactions take row locks in the same order, so they
  wait for each other instead of deadlocking.

Known limit: ``event_id`` is unique per table. An id reused across an exposure and a conversion
in different requests is stored in both tables; within one request it is a conflict.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session, col, select

from service.config import get_settings
from service.db import get_engine, open_session, utcnow
from service.errors import (
    AppError,
    FieldError,
    PayloadTooLargeError,
    TooManyRequestsError,
    ValidationFailedError,
)
from service.events.models import (
    MAX_EVENTS_PER_REQUEST,
    ConversionIn,
    EventBatchIn,
    EventIn,
    ExposureIn,
    IngestResult,
    RejectedEvent,
    event_adapter,
)
from service.experiments.models import Experiment, ExperimentPhase, Status

__all__ = [
    "EventIn",
    "IngestGate",
    "ingest",
    "ingest_body",
    "parse_batch",
    "payload_hash",
]

SQLITE_ROWS_PER_STATEMENT = 500
RETRY_AFTER_SECONDS = 1
NOT_STARTED = frozenset({Status.draft.value, Status.archived.value})
ENDED = frozenset({Status.stopped.value, Status.concluded.value})

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
# PostgreSQL staging tables for COPY: the inserted columns only (no id, no constraints).
STAGE_COLUMNS = {
    "exposure": "event_id text, experiment_id integer, phase integer, variant text, unit_id text, "
    "ts timestamptz, received_at timestamptz, payload_hash text, late boolean",
    "conversion": "event_id text, name text, unit_id text, value double precision, "
    "ts timestamptz, received_at timestamptz, payload_hash text",
}
UNIT_COLUMNS = ("experiment_id", "phase", "unit_id", "variant", "first_ts", "multiple")

# ------------------------------------------------------------------------------------- parsing


class MalformedJsonError(AppError):
    status = 400
    code = "malformed_json"
    title = "Malformed JSON"


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] in ("exposure", "conversion"):  # the discriminator tag
            loc = loc[1:]
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse_batch(body: bytes) -> tuple[list[tuple[int, EventIn]], list[RejectedEvent]]:
    """Parse a ``{events: [...]}`` body and validate every event on its own.

    Parameters
    ----------
    body : bytes
        The raw request body.

    Returns
    -------
    valid : list of (int, EventIn)
        The events that passed validation, with their index in the batch.
    rejected : list of RejectedEvent
        The events that did not, with their index and the reason.

    Raises
    ------
    MalformedJsonError
        The body is not JSON (400).
    ValidationFailedError
        The body is not an object with exactly one list field ``events`` (422).
    PayloadTooLargeError
        More than 10,000 events (413).
    """
    # Fast path: one pass of pydantic's JSON validator over the whole batch (no Python dicts).
    # Any problem, and the slow path below says which events are bad and why.
    try:
        batch = EventBatchIn.model_validate_json(body)
    except ValidationError:
        pass
    else:
        return list(enumerate(batch.events)), []
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedJsonError(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationFailedError.on("body", 'send an object: {"events": [...]}')
    extra = sorted(set(data) - {"events"})
    if extra:
        raise ValidationFailedError(
            f'unknown fields {extra}; the body is {{"events": [...]}}',
            errors=[FieldError(field=k, message="unknown field") for k in extra],
        )
    events = data.get("events")
    if not isinstance(events, list):
        raise ValidationFailedError.on("events", "give a list of events")
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise PayloadTooLargeError(
            f"{len(events)} events in one request; send at most {MAX_EVENTS_PER_REQUEST:,}.",
            code="too_many_events",
        )
    valid: list[tuple[int, EventIn]] = []
    rejected: list[RejectedEvent] = []
    validate = event_adapter.validate_python
    for index, raw in enumerate(events):
        try:
            valid.append((index, validate(raw)))
        except ValidationError as exc:
            rejected.append(RejectedEvent(index=index, error=_describe(exc), code="invalid"))
    return valid, rejected


# ------------------------------------------------------------------------------------- hashing


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)


def payload_hash(event: EventIn) -> str:
    """Hash of the canonical payload (what a repeat must match to be a duplicate).

    Timestamps are compared as instants (``Z`` and ``+00:00`` are the same payload), a conversion
    without ``value`` equals one with ``value: 1``, and an exposure's ``phase`` is hashed as sent.

    Parameters
    ----------
    event : EventIn
        A validated event.

    Returns
    -------
    str
        32 hexadecimal characters (BLAKE2b, 128 bits).
    """
    ts = _utc(event.timestamp).isoformat()
    # Strings are length-prefixed so that no choice of separator inside them can make two
    # different payloads encode alike.
    if isinstance(event, ExposureIn):
        e, x, v, u = event.event_id, event.experiment, event.variant, event.unit_id
        canonical = (
            f"exposure|{len(e)}:{e}|{len(x)}:{x}|{len(v)}:{v}|{len(u)}:{u}|{ts}|{event.phase}"
        )
    else:
        e, n, u = event.event_id, event.name, event.unit_id
        # + 0.0 maps -0.0 to 0.0 (the same value); repr of a float round-trips exactly.
        canonical = f"conversion|{len(e)}:{e}|{len(n)}:{n}|{len(u)}:{u}|{ts}|{event.value + 0.0!r}"
    return hashlib.blake2b(canonical.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


# ---------------------------------------------------------------------------------- experiments


@dataclass
class _Target:
    id: int
    status: str
    phase: int
    variants: dict[int, frozenset[str]] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)


def _targets(session: Session, keys: set[str]) -> dict[str, _Target]:
    if not keys:
        return {}
    rows = session.exec(
        select(
            col(Experiment.id), col(Experiment.key), col(Experiment.status), col(Experiment.phase)
        ).where(col(Experiment.key).in_(sorted(keys)))
    ).all()
    out = {
        key: _Target(id=int(id_ or 0), status=status, phase=phase)
        for id_, key, status, phase in rows
    }
    by_id = {t.id: t for t in out.values()}
    if by_id:
        phases = session.exec(
            select(
                col(ExperimentPhase.experiment_id),
                col(ExperimentPhase.phase),
                col(ExperimentPhase.variants),
                col(ExperimentPhase.ended_at),
            ).where(col(ExperimentPhase.experiment_id).in_(sorted(by_id)))
        ).all()
        for exp_id, number, variants, ended_at in phases:
            target = by_id[exp_id]
            target.variants[number] = frozenset(v["key"] for v in variants)
            if ended_at is not None:
                target.ended.add(number)
    return out


# -------------------------------------------------------------------------------------- storage


def _sqlite_ts(ts: datetime) -> str:
    """The text SQLAlchemy's SQLite ``DateTime`` stores (fixed width, so it sorts as time)."""
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _chunks(rows: list[tuple[Any, ...]], size: int) -> Iterable[list[tuple[Any, ...]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


class _Store:
    """Dialect-specific statements on the session's driver connection (same transaction)."""

    def __init__(self, session: Session) -> None:
        connection = session.connection()
        self.sqlite = connection.dialect.name == "sqlite"
        self.raw: Any = connection.connection.driver_connection
        self.mark = "?" if self.sqlite else "%s"

    def ts(self, value: datetime) -> Any:
        return _sqlite_ts(value) if self.sqlite else value

    def flag(self, value: bool) -> Any:
        return int(value) if self.sqlite else value

    def _values(self, width: int, count: int) -> str:
        one = "(" + ",".join([self.mark] * width) + ")"
        return ",".join([one] * count)

    def insert_new(
        self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
    ) -> set[str]:
        """Insert rows whose ``event_id`` (first column) is new; return the ids inserted."""
        if not rows:
            return set()
        rows.sort(key=lambda r: r[0])
        names = ", ".join(columns)
        inserted: set[str] = set()
        if self.sqlite:
            # The transaction holds SQLite's write lock (BEGIN IMMEDIATE), so the rows this
            # statement inserts are exactly those with a rowid above the current maximum; when
            # every row is new (the common case) not even that query is needed.
            cur = self.raw.cursor()
            try:
                top = cur.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0]
                before = self.raw.total_changes
                cur.executemany(
                    f"INSERT INTO {table} ({names}) VALUES ({','.join('?' * len(columns))}) "
                    "ON CONFLICT(event_id) DO NOTHING",
                    rows,
                )
                if self.raw.total_changes - before == len(rows):
                    return {r[0] for r in rows}
                cur.execute(f"SELECT event_id FROM {table} WHERE id > ?", (top,))
                inserted.update(r[0] for r in cur.fetchall())
            finally:
                cur.close()
            return inserted
        stage = f"tb_stage_{table}"
        with self.raw.cursor() as cur:
            cur.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} ({STAGE_COLUMNS[table]}) "
                "ON COMMIT DELETE ROWS"
            )
            cur.execute(f"DELETE FROM {stage}")
            with cur.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(
                f"INSERT INTO {table} ({names}) SELECT {names} FROM {stage} ORDER BY event_id "
                "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
            )
            inserted.update(r[0] for r in cur.fetchall())
        return inserted

    def stored_hashes(self, table: str, event_ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        cur = self.raw.cursor()
        try:
            for start in range(0, len(event_ids), SQLITE_ROWS_PER_STATEMENT):
                ids = event_ids[start : start + SQLITE_ROWS_PER_STATEMENT]
                marks = ",".join([self.mark] * len(ids))
                cur.execute(
                    f"SELECT event_id, payload_hash FROM {table} WHERE event_id IN ({marks})", ids
                )
                out.update((r[0], r[1]) for r in cur.fetchall())
        finally:
            cur.close()
        return out

    def upsert_units(self, rows: list[tuple[Any, ...]]) -> None:
        """Merge first exposures into ``exposure_unit`` (earliest wins; flag several variants)."""
        if not rows:
            return
        rows.sort(key=lambda r: (r[0], r[1], r[2]))
        names = ", ".join(UNIT_COLUMNS)
        cur = self.raw.cursor()
        try:
            for chunk in _chunks(rows, SQLITE_ROWS_PER_STATEMENT):
                cur.execute(
                    f"INSERT INTO exposure_unit ({names}) VALUES "
                    f"{self._values(len(UNIT_COLUMNS), len(chunk))} "
                    "ON CONFLICT (experiment_id, phase, unit_id) DO UPDATE SET "
                    "multiple = (exposure_unit.multiple OR excluded.multiple "
                    "OR exposure_unit.variant <> excluded.variant), "
                    "variant = CASE WHEN excluded.first_ts < exposure_unit.first_ts "
                    "THEN excluded.variant ELSE exposure_unit.variant END, "
                    "first_ts = CASE WHEN excluded.first_ts < exposure_unit.first_ts "
                    "THEN excluded.first_ts ELSE exposure_unit.first_ts END",
                    [v for row in chunk for v in row],
                )
        finally:
            cur.close()


@dataclass
class _Pending:
    """An event that passed every check, waiting for its insert."""

    index: int
    event: EventIn
    digest: str
    row: tuple[Any, ...]
    late: bool = False
    unit: tuple[int, int, str, str, datetime] | None = None  # (exp id, phase, unit, variant, ts)


def _resolve_exposure(
    event: ExposureIn, targets: dict[str, _Target]
) -> tuple[RejectedEvent | None, int, int, bool]:
    """Check an exposure against its experiment; return (rejection, experiment id, phase, late)."""
    target = targets.get(event.experiment)
    if target is None:
        return (
            RejectedEvent(
                index=-1,
                error=f"no experiment with key '{event.experiment}'",
                code="unknown_experiment",
            ),
            0,
            0,
            False,
        )
    if target.status in NOT_STARTED:
        return (
            RejectedEvent(
                index=-1,
                error=f"experiment '{event.experiment}' is '{target.status}': it has not started",
                code="not_started",
            ),
            0,
            0,
            False,
        )
    phase = event.phase if event.phase is not None else target.phase
    variants = target.variants.get(phase)
    if variants is None:
        return (
            RejectedEvent(
                index=-1,
                error=f"experiment '{event.experiment}' has no phase {phase} "
                f"(phases 1 to {target.phase})",
                code="unknown_phase",
            ),
            0,
            0,
            False,
        )
    if event.variant not in variants:
        return (
            RejectedEvent(
                index=-1,
                error=f"'{event.variant}' is not a variant of experiment '{event.experiment}' "
                f"in phase {phase}; use one of {sorted(variants)}",
                code="unknown_variant",
            ),
            0,
            0,
            False,
        )
    late = target.status in ENDED or phase in target.ended or phase < target.phase
    return None, target.id, phase, late


def ingest_indexed(
    session: Session,
    events: Sequence[tuple[int, EventIn]],
    rejected: Sequence[RejectedEvent] = (),
) -> IngestResult:
    """Store validated events (each with its index in the request) in one transaction and commit.

    Parameters
    ----------
    session : Session
        A session whose transaction may write (``open_session(write=True)``); it is committed.
    events : sequence of (int, EventIn)
        Validated events and their index in the batch.
    rejected : sequence of RejectedEvent
        Events already rejected by validation; they are reported with the others.

    Returns
    -------
    IngestResult
        accepted, duplicates, conflicts, rejected (sorted by index) and late.
    """
    out_rejected = list(rejected)
    store = _Store(session)
    received = store.ts(utcnow())
    targets = _targets(session, {e.experiment for _, e in events if isinstance(e, ExposureIn)})

    first: dict[str, _Pending] = {}  # event_id -> first valid occurrence in this batch
    duplicates = conflicts = 0
    exposures: list[_Pending] = []
    conversions: list[_Pending] = []
    for index, event in events:
        digest = payload_hash(event)
        if isinstance(event, ExposureIn):
            rejection, exp_id, phase, late = _resolve_exposure(event, targets)
            if rejection is not None:
                out_rejected.append(rejection.model_copy(update={"index": index}))
                continue
        seen = first.get(event.event_id)
        if seen is not None:  # a repeat inside the batch
            if seen.digest == digest:
                duplicates += 1
            else:
                conflicts += 1
            continue
        if isinstance(event, ExposureIn):
            row: tuple[Any, ...] = (
                event.event_id,
                exp_id,
                phase,
                event.variant,
                event.unit_id,
                store.ts(event.timestamp),
                received,
                digest,
                store.flag(late),
            )
            pending = _Pending(
                index,
                event,
                digest,
                row,
                late,
                (exp_id, phase, event.unit_id, event.variant, _utc(event.timestamp)),
            )
            exposures.append(pending)
        else:
            assert isinstance(event, ConversionIn)
            row = (
                event.event_id,
                event.name,
                event.unit_id,
                event.value,
                store.ts(event.timestamp),
                received,
                digest,
            )
            pending = _Pending(index, event, digest, row)
            conversions.append(pending)
        first[event.event_id] = pending

    accepted = late_count = 0
    new_exposures: list[_Pending] = []
    for table, columns, pendings in (
        ("exposure", EXPOSURE_COLUMNS, exposures),
        ("conversion", CONVERSION_COLUMNS, conversions),
    ):
        inserted = store.insert_new(table, columns, [p.row for p in pendings])
        accepted += len(inserted)
        old = [p for p in pendings if p.event.event_id not in inserted]
        stored = store.stored_hashes(table, [p.event.event_id for p in old]) if old else {}
        for p in old:
            if stored.get(p.event.event_id) == p.digest:
                duplicates += 1
            else:
                conflicts += 1
        if table == "exposure":
            new_exposures = [p for p in pendings if p.event.event_id in inserted]
            late_count = sum(1 for p in new_exposures if p.late)

    store.upsert_units(_unit_rows(new_exposures, store))
    session.commit()
    out_rejected.sort(key=lambda r: r.index)
    return IngestResult(
        accepted=accepted,
        duplicates=duplicates,
        conflicts=conflicts,
        rejected=out_rejected,
        late=late_count,
    )


def _unit_rows(new_exposures: list[_Pending], store: _Store) -> list[tuple[Any, ...]]:
    """One row per (experiment, phase, unit) of the inserted exposures, earliest first."""
    units: dict[tuple[int, int, str], tuple[str, datetime, bool]] = {}
    for p in new_exposures:
        assert p.unit is not None
        exp_id, phase, unit_id, variant, ts = p.unit
        key = (exp_id, phase, unit_id)
        current = units.get(key)
        if current is None:
            units[key] = (variant, ts, False)
            continue
        cur_variant, cur_ts, multiple = current
        multiple = multiple or cur_variant != variant
        if ts < cur_ts:
            units[key] = (variant, ts, multiple)
        else:
            units[key] = (cur_variant, cur_ts, multiple)
    return [
        (exp_id, phase, unit_id, variant, store.ts(ts), store.flag(multiple))
        for (exp_id, phase, unit_id), (variant, ts, multiple) in units.items()
    ]


def ingest(session: Session, events: Sequence[EventIn]) -> IngestResult:
    """Store validated events idempotently in one transaction and commit (in-process callers).

    Parameters
    ----------
    session : Session
        A write session (``open_session(write=True)``); committed on return.
    events : sequence of EventIn
        :class:`ExposureIn` and :class:`ConversionIn` objects; ``rejected[].index`` refers to
        positions in this sequence.

    Returns
    -------
    IngestResult
        The per-event verdicts.
    """
    return ingest_indexed(session, list(enumerate(events)))


# ------------------------------------------------------------------------------------ the gate


class IngestGate:
    """Bound the ingest requests of this process that wait for, or hold, the write lock.

    Parameters
    ----------
    limit : int
        How many may be in flight at once; one more is shed with a 429.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    def __enter__(self) -> IngestGate:
        if not self._slots.acquire(blocking=False):
            raise TooManyRequestsError(
                f"More than {self.limit} event batches are being written by this server; "
                f"retry after {RETRY_AFTER_SECONDS} s.",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                code="ingest_overloaded",
            )
        return self

    def __exit__(self, *_: object) -> None:
        self._slots.release()


_gate_lock = threading.Lock()
_gate: IngestGate | None = None


def gate() -> IngestGate:
    """The process-wide gate, sized from ``Settings.ingest_max_concurrency``."""
    global _gate
    with _gate_lock:
        if _gate is None:
            _gate = IngestGate(get_settings().ingest_max_concurrency)
        return _gate


def ingest_body(body: bytes) -> IngestResult:
    """Handle a ``POST /v1/events`` body: parse, validate, shed load if needed, store, commit.

    Parameters
    ----------
    body : bytes
        The raw request body ``{"events": [...]}``.

    Returns
    -------
    IngestResult
        The per-event verdicts; the accepted events are committed.
    """
    valid, rejected = parse_batch(body)
    if not valid:
        return IngestResult(accepted=0, duplicates=0, conflicts=0, rejected=rejected, late=0)
    with gate(), _sqlite_writer():
        session = open_session(write=True)
        try:
            return ingest_indexed(session, valid, rejected)
        finally:
            session.close()


_sqlite_write_lock = threading.Lock()


@contextmanager
def _sqlite_writer() -> Iterator[None]:
    """On SQLite, let one thread of this process at a time ask for the write lock.

    SQLite's busy handler polls with sleeps of up to 100 ms, so threads queued on it wake late
    after the lock is released; a Python lock hands over at once. Other processes (workers) still
    queue on the busy timeout, one thread each. PostgreSQL writes concurrently: no lock.
    """
    if get_engine().dialect.name != "sqlite":
        yield
        return
    with _sqlite_write_lock:
        yield
