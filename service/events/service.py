"""Event ingestion: validation, idempotent storage, first exposures per unit.

Flow of a ``POST /v1/events`` request (:func:`ingest_body`):

1. Parse (:func:`parse_batch`): one pass of pydantic-core's JSON validator over the raw body into
   plain dicts, timestamps kept as RFC 3339 text; only if that fails, :func:`json.loads` and
   per-event validation with the models, so a malformed event is rejected with its index and
   the others go on.
2. Prepare (:func:`_prepare`): per event the UTC timestamp texts (cut from the text sent when
   it is at UTC), the payload hash and the values of its row.
3. Plan (:func:`_plan`): resolve the exposures against their experiments (as the writer last
   read them, at most a second ago), settle repeats inside the request, and make the rows, the
   ``exposure_unit`` rows and, on SQLite, the values to bind in one flat list per table.
   Steps 1 to 3 run in the request's thread before any database lock, one request at a time
   (they hold the GIL anyway; see ``_python_work``), while the writer inserts.
4. A per-process gate bounds the requests waiting for the write lock; past it the request is
   shed with a 429 and ``Retry-After`` (setting ``TRIALBOOK_INGEST_MAX_CONCURRENCY``).
5. Group commit (:class:`_GroupWriter`): the requests waiting while a transaction runs are
   written together in the next one, on the writer's own connection (:class:`_WriterConnection`),
   each still answered with its own verdicts after that commit. The transaction (:func:`_store`;
   SQLite ``BEGIN IMMEDIATE``) reads the experiments again and remakes a plan made on an older
   reading, inserts the rows with the fastest idempotent statement of the database, compares the
   payload hash of every event that was already stored (same hash: duplicate; different:
   conflict, the stored event is kept), upserts ``exposure_unit`` for the newly inserted
   exposures, and commits. Only then is the answer sent, so a 2xx means the accepted events are
   durable.

Insert statements:

- SQLite: multi-row ``INSERT ... VALUES (...), ... ON CONFLICT(event_id) DO NOTHING`` of a few
  fixed sizes, cached compiled (:meth:`_Store._insert_flat` says why not ``executemany``); the
  inserted rows are known from ``total_changes`` and, when some were already stored, from the
  rowids just below the last one inserted (the write lock is held). ``exposure_unit`` likewise,
  with an upsert. The WAL is checkpointed by a background thread (``service.db.WalCheckpointer``),
  not in the writer's commits.
- PostgreSQL: ``COPY`` into a temporary staging table, then ``INSERT ... SELECT ... ORDER BY
  event_id ON CONFLICT (event_id) DO NOTHING RETURNING event_id``; ``exposure_unit`` likewise,
  one set-based ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``. The ordering makes concurrent
  transactions take row locks in the same order, so they wait for each other instead of
  deadlocking.

Timestamps are stored as UTC text ``YYYY-MM-DD HH:MM:SS.ffffff`` on SQLite (what SQLAlchemy's
``DateTime`` writes, read back by ``UTCDateTime``) and sent to PostgreSQL as the same text with
``+00``.

Known limit: ``event_id`` is unique per table. An id reused across an exposure and a conversion
in different requests is stored in both tables; within one request it is a conflict.
"""

from __future__ import annotations

import atexit
import json
import threading
import time
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from hashlib import blake2b
from itertools import chain
from typing import Any, NamedTuple

from pydantic import ValidationError
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from service.config import get_settings
from service.db import IMMEDIATE, get_engine, open_session, utcnow
from service.errors import (
    AppError,
    FieldError,
    PayloadTooLargeError,
    TooManyRequestsError,
    ValidationFailedError,
)
from service.events.models import (
    MAX_EVENTS_PER_REQUEST,
    EventIn,
    ExposureIn,
    IngestResult,
    RejectedEvent,
    batch_adapter,
    event_adapter,
    timestamp_bounds,
)
from service.experiments.models import Status
from service.json_body import JsonBodyError, load_json

__all__ = [
    "EventIn",
    "IngestGate",
    "ParsedBatch",
    "ingest",
    "ingest_body",
    "ingest_indexed",
    "parse_batch",
    "payload_hash",
]

ZERO_OFFSETS = frozenset({"+00:00", "-00:00"})
ROWS_PER_LOOKUP = 500  # event ids per ``IN (...)`` when reading stored hashes
# Rows per multi-row INSERT on SQLite, largest first (at most 32,766 bound values, SQLite >= 3.32).
SQLITE_CHUNKS = (2048, 1024, 512, 256)
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

# ------------------------------------------------------------------------------------- parsing


class MalformedJsonError(AppError):
    status = 400
    code = "malformed_json"
    title = "Malformed JSON"


class ParsedBatch(NamedTuple):
    """A parsed request body: the valid events as plain dicts, and the rejected ones.

    ``events[i]`` has the keys of :class:`ExposureIn` or :class:`ConversionIn` (``phase`` and
    ``value`` may be missing); it sits at position ``indexes[i]`` of the request, or at ``i`` when
    ``indexes`` is ``None`` (every event was valid).
    """

    events: list[dict[str, Any]]
    indexes: list[int] | None
    rejected: list[RejectedEvent]


# Error types of the models that have a code of their own in ``rejected`` (product.md §5).
_VALUE_RANGE_TYPES = frozenset(
    {"value_out_of_range", "finite_number", "greater_than_equal", "less_than_equal"}
)


def _error_code(exc: ValidationError) -> str:
    """``value_out_of_range`` or ``timestamp_out_of_range`` when that is the only problem of the
    event, else ``invalid``."""
    codes = set()
    for err in exc.errors(include_url=False):
        loc = err.get("loc", ())
        kind = err.get("type")
        if loc and loc[-1] == "value" and kind in _VALUE_RANGE_TYPES:
            codes.add("value_out_of_range")
        elif kind == "timestamp_out_of_range":
            codes.add("timestamp_out_of_range")
        else:
            return "invalid"
    return codes.pop() if len(codes) == 1 else "invalid"


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] in ("exposure", "conversion"):  # the discriminator tag
            loc = loc[1:]
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
    return "; ".join(parts)


def _rejection(index: int, exc: ValidationError) -> RejectedEvent:
    return RejectedEvent(index=index, error=_describe(exc), code=_error_code(exc))


def _no_repeated_key(body: bytes, events: list[dict[str, Any]]) -> bool:
    """Whether no object of ``body`` repeats a key, for a body the one-pass validator accepted
    as ``events``; ``False`` also when it cannot tell (the per-event path then decides).

    pydantic-core keeps the last of repeated keys, and counting them needs no second parse.
    A ``:`` outside strings separates a key from its value, so the body's colons are its keys
    plus the colons inside its strings. The validated dicts have one key per distinct key of
    the body (no unknown key passes), and the decoded strings hold at most the body's colons
    inside strings, unless one is escaped as ``\\u003a`` (then: cannot tell). So
    ``colons == 1 + Σ len(event) + Σ colons of the events' strings`` exactly when no key is
    repeated. Every timestamp has two or more colons: when the count is ``1 + Σ len + 2 n``
    (the common case, checked first without a loop in Python) there is no repeat.
    """
    if b"\\u003a" in body or b"\\u003A" in body:
        return False
    colons = body.count(b":")
    keys = 1 + sum(map(len, events))
    if colons == keys + 2 * len(events):
        return True
    inside = sum(v.count(":") for ev in events for v in ev.values() if v.__class__ is str)
    return colons == keys + inside


def body_error(message: str, *, code: str = "malformed_json") -> MalformedJsonError:
    """A 400 about the request body as a whole (field ``body``)."""
    return MalformedJsonError(
        f"The request body is {message}",
        errors=[FieldError(field="body", message=message, type=code)],
        code=code,
    )


def parse_batch(body: bytes) -> ParsedBatch:
    """Parse a ``{events: [...]}`` body and validate every event.

    Parameters
    ----------
    body : bytes
        The raw request body.

    Returns
    -------
    ParsedBatch
        The valid events (plain dicts) with their index in the batch, and the rejected events
        with their index and the reason.

    Raises
    ------
    MalformedJsonError
        The body is not JSON, repeats a key in an object, or nests deeper than 32 (400).
    ValidationFailedError
        The body is not an object with exactly one list field ``events`` (422).
    PayloadTooLargeError
        More than 10,000 events (413).

    Notes
    -----
    Fast path: one pass of pydantic-core's JSON validator over the whole body into dicts
    (``batch_adapter``; about 2 µs an event, no Python per event), and a count of the body's
    colons that proves no key was repeated (:func:`_no_repeated_key`); its schema bounds the
    nesting. On any error the slow path parses with :func:`service.json_body.load_json` and
    validates each event on its own with the models, which says which events are bad and why;
    the good ones of the batch go on.
    """
    try:
        fast: list[dict[str, Any]] = batch_adapter.validate_json(body)["events"]  # type: ignore[assignment]
    except ValidationError:
        pass
    else:
        if _no_repeated_key(body, fast):
            return ParsedBatch(fast, None, [])
    try:
        data = load_json(body)
    except JsonBodyError as exc:
        raise body_error(exc.message, code=exc.code) from None
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
    valid: list[dict[str, Any]] = []
    indexes: list[int] = []
    rejected: list[RejectedEvent] = []
    validate = event_adapter.validate_python
    for index, raw in enumerate(events):
        try:
            valid.append(vars(validate(raw)))
        except ValidationError as exc:
            rejected.append(_rejection(index, exc))
        else:
            indexes.append(index)
    return ParsedBatch(valid, indexes, rejected)


# ------------------------------------------------------------------------------------- hashing


def _utc_iso(ts: datetime) -> str:
    """ISO 8601 of the instant in UTC: ``YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00``."""
    if ts.utcoffset():  # zero offsets (Z, +00:00) need no conversion: the common case
        ts = ts.astimezone(UTC)
    return ts.isoformat()


def attribute_text(value: Any) -> str:
    """An attribute value as the text kept for slicing: 3 and 3.0 are one slice, ``true``."""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _attributes_canonical(attributes: Mapping[str, Any]) -> str:
    """The attributes' part of an exposure's payload (only when it has some, so that the hash
    of an exposure without attributes is unchanged)."""
    return "|attrs:" + json.dumps(sorted(attributes.items()), separators=(",", ":"))


def _kept_attributes(attributes: Mapping[str, Any] | None, dimensions: Sequence[str]) -> Any:
    """JSON text of the experiment's dimensions among the attributes, or None."""
    if not attributes or not dimensions:
        return None
    kept = {d: attribute_text(attributes[d]) for d in dimensions if attributes.get(d) is not None}
    return json.dumps(kept, sort_keys=True) if kept else None


def _exposure_digest(
    event_id: str,
    experiment: str,
    variant: str,
    unit: str,
    iso: str,
    phase: Any,
    attributes: Mapping[str, Any] | None = None,
) -> str:
    # Strings are length-prefixed so that no choice of separator inside them can make two
    # different payloads encode alike.
    canonical = (
        f"exposure|{len(event_id)}:{event_id}|{len(experiment)}:{experiment}|"
        f"{len(variant)}:{variant}|{len(unit)}:{unit}|{iso}|{phase}"
    )
    if attributes:
        canonical += _attributes_canonical(attributes)
    return blake2b(canonical.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _conversion_digest(event_id: str, name: str, unit: str, iso: str, value: float) -> str:
    # ``value`` has had 0.0 added (-0.0 is 0.0); repr of a float round-trips exactly.
    canonical = (
        f"conversion|{len(event_id)}:{event_id}|{len(name)}:{name}|{len(unit)}:{unit}|"
        f"{iso}|{value!r}"
    )
    return blake2b(canonical.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


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
        32 hexadecimal characters (BLAKE2b, 128 bits) of the length-prefixed fields.
    """
    iso = _utc_iso(event.timestamp)
    if isinstance(event, ExposureIn):
        return _exposure_digest(
            event.event_id,
            event.experiment,
            event.variant,
            event.unit_id,
            iso,
            event.phase,
            event.attributes,
        )
    return _conversion_digest(event.event_id, event.name, event.unit_id, iso, event.value + 0.0)


# One prepared event: (index, is_exposure, event_id, digest, stored ts, unit_id,
#   experiment | name, variant | value, phase as sent | None, attributes | None).
_Item = tuple[int, bool, str, str, str, str, str, Any, Any, Any]


def _from_model(
    event: Mapping[str, Any], index: int, rejected: list[RejectedEvent]
) -> datetime | None:
    """The timestamp of an event whose RFC 3339 text ``fromisoformat`` refused, as the models
    read it; or ``None`` after rejecting the event with the models' reason."""
    try:
        timestamp: datetime = event_adapter.validate_python(event).timestamp
    except ValidationError as exc:
        rejected.append(_rejection(index, exc))
        return None
    return timestamp


def _out_of_range(index: int, low: datetime, high: datetime) -> RejectedEvent:
    return RejectedEvent(
        index=index,
        error=f"timestamp: must be from {low.isoformat()} to 24 hours after the server's clock "
        f"({high.isoformat(timespec='seconds')}); send the time the event happened",
        code="timestamp_out_of_range",
    )


def _prepare(
    events: Sequence[Mapping[str, Any]], indexes: Sequence[int] | None, *, sqlite: bool
) -> tuple[list[_Item], list[RejectedEvent]]:
    """Per event, the work that needs no database: UTC timestamp, payload hash, row values.

    Runs before the write lock is taken, so that it overlaps the inserts of other requests.
    """
    items: list[_Item] = []
    rejected: list[RejectedEvent] = []
    append = items.append
    fromisoformat = datetime.fromisoformat
    suffix = "" if sqlite else "+00"  # PostgreSQL parses the text of a timestamptz: say UTC
    # product.md §5 bounds, as stored text (fixed width: it compares as time).
    low, high = timestamp_bounds()
    lowest = low.strftime("%Y-%m-%d %H:%M:%S.000000") + suffix
    highest = high.isoformat(" ", "microseconds")[:26] + suffix
    # The bodies of _utc_iso, _exposure_digest and _conversion_digest, inlined: this loop runs
    # once per event and a Python call costs about 0.1 µs (tests check they agree).
    for pos, ev in enumerate(events):
        index = pos if indexes is None else indexes[pos]
        ts = ev["timestamp"]
        if ts.__class__ is str:  # RFC 3339 text (fast path, pattern-checked)
            zulu = ts[-1] == "Z"
            local = ts[:-1] if zulu else ts[:-6]
            moment: datetime | None
            try:
                moment = fromisoformat(ts)  # checks the ranges: it refuses 2026-02-30
            except ValueError:
                moment = _from_model(ev, index, rejected)
                if moment is None:
                    continue
                ts = moment
            else:
                if zulu or ts[-6:] in ZERO_OFFSETS:
                    # At UTC, the common case: both texts are cut from the one sent, as
                    # datetime.isoformat and SQLAlchemy would write them.
                    micro = (local[20:] + "000000")[:6]
                    iso = (
                        f"{local[:19]}+00:00"
                        if micro == "000000"
                        else f"{local[:19]}.{micro}+00:00"
                    )
                    stored = f"{local[:10]} {local[11:19]}.{micro}{suffix}"
                    ts = None
                else:
                    ts = moment
        if ts is not None:
            if ts.utcoffset():
                try:
                    ts = ts.astimezone(UTC)
                except OverflowError:  # e.g. 0001-01-01T00:30:00+01:00 is before year 1 in UTC
                    rejected.append(_out_of_range(index, low, high))
                    continue
            iso = ts.isoformat()
            stored = f"{iso[:10]} {iso[11:19]}{iso[19:26] if iso[19] == '.' else '.000000'}{suffix}"
        if not lowest <= stored <= highest:
            rejected.append(_out_of_range(index, low, high))
            continue
        event_id, unit = ev["event_id"], ev["unit_id"]
        if ev["type"] == "exposure":
            experiment, variant, phase = ev["experiment"], ev["variant"], ev.get("phase")
            attributes = ev.get("attributes")
            canonical = (
                f"exposure|{len(event_id)}:{event_id}|{len(experiment)}:{experiment}|"
                f"{len(variant)}:{variant}|{len(unit)}:{unit}|{iso}|{phase}"
            )
            if attributes:
                canonical += _attributes_canonical(attributes)
            digest = blake2b(canonical.encode("utf-8", "surrogatepass"), digest_size=16)
            append(
                (
                    index,
                    True,
                    event_id,
                    digest.hexdigest(),
                    stored,
                    unit,
                    experiment,
                    variant,
                    phase,
                    attributes,
                )
            )
        else:
            name, value = ev["name"], ev.get("value", 1.0) + 0.0
            canonical = (
                f"conversion|{len(event_id)}:{event_id}|{len(name)}:{name}|{len(unit)}:{unit}|"
                f"{iso}|{value!r}"
            )
            digest = blake2b(canonical.encode("utf-8", "surrogatepass"), digest_size=16)
            append(
                (index, False, event_id, digest.hexdigest(), stored, unit, name, value, None, None)
            )
    return items, rejected


# ---------------------------------------------------------------------------------- experiments


@dataclass
class _Target:
    id: int
    status: str
    phase: int
    variants: dict[int, frozenset[str]] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)
    dimensions: tuple[str, ...] = ()  # kept with a unit's first exposure (§12)


# (experiment id, phase, late) for an accepted exposure, else (code, reason).
_Resolution = tuple[int, int, bool] | tuple[str, str]


def _resolve(
    target: _Target | None, experiment: str, phase_sent: int | None, variant: str
) -> _Resolution:
    """Check an exposure against its experiment: ids and lateness, or a rejection."""
    if target is None:
        return "unknown_experiment", f"no experiment with key '{experiment}'"
    if target.status in NOT_STARTED:
        return "not_started", f"experiment '{experiment}' is '{target.status}': it has not started"
    phase = phase_sent if phase_sent is not None else target.phase
    variants = target.variants.get(phase)
    if variants is None:
        return (
            "unknown_phase",
            f"experiment '{experiment}' has no phase {phase} (phases 1 to {target.phase})",
        )
    if variant not in variants:
        return (
            "unknown_variant",
            f"'{variant}' is not a variant of experiment '{experiment}' in phase {phase}; "
            f"use one of {sorted(variants)}",
        )
    late = target.status in ENDED or phase in target.ended or phase < target.phase
    return target.id, phase, late


# -------------------------------------------------------------------------------------- storage


def _sqlite_ts(ts: datetime) -> str:
    """The text SQLAlchemy's SQLite ``DateTime`` stores (fixed width, so it sorts as time)."""
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


@lru_cache(maxsize=64)
def _multi_row_sql(head: str, tail: str, width: int, rows: int) -> str:
    """``head VALUES (?, ...), ... tail`` for ``rows`` rows of ``width`` values."""
    one = "(" + ",".join("?" * width) + ")"
    return f"{head} VALUES {','.join([one] * rows)} {tail}"


class _Store:
    """Dialect-specific statements on the session's driver connection (same transaction)."""

    def __init__(self, session: Session) -> None:
        connection = session.connection()
        self.sqlite = connection.dialect.name == "sqlite"
        self.raw: Any = connection.connection.driver_connection
        self.mark = "?" if self.sqlite else "%s"

    def targets(self, keys: Collection[str]) -> dict[str, _Target]:
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
        out: dict[str, _Target] = {}
        for exp_id, key, status, current, number, variants, ended_at, dims in rows:
            target = out.get(key)
            if target is None:
                if isinstance(dims, str | bytes):
                    dims = json.loads(dims)
                target = out[key] = _Target(
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
                self._insert_flat(
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
    def _insert_flat(cur: Any, head: str, tail: str, width: int, flat: list[Any]) -> None:
        """SQLite: insert ``flat`` (rows of ``width`` values) with multi-row statements.

        Why not ``executemany`` of a single-row statement? The driver releases the GIL around
        each row's step and must take it back after; while request threads validate, the
        writer waits for it once per row (up to the 5 ms switch interval, or a whole pydantic
        call), and under load it inserted about 5,000 rows/s instead of 60,000. A statement of
        many rows takes the GIL back once for all of them.

        Why fixed sizes (``SQLITE_CHUNKS``)? Compiling a statement costs about 3.6 µs a row,
        as much as inserting it, and the driver caches compiled statements by their text: a
        few sizes are compiled once per connection. The rest after the full chunks goes in one
        statement of the smallest size that holds it, padded with copies of its last row, which
        the statement's own ``ON CONFLICT`` makes no-ops: ``DO NOTHING`` for events (and
        ``total_changes`` counts only real inserts), an idempotent ``DO UPDATE`` for
        ``exposure_unit``. A padded row costs a lookup in the unique index; one more statement
        costs the writer waits for the GIL, which measured dearer up to half a chunk of padding.
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
        :func:`_merge_units`), sorted by key so that concurrent transactions lock in the same
        order.
        """
        if not rows:
            return
        names = ", ".join(UNIT_COLUMNS)
        merge = UNIT_MERGE
        if self.sqlite:
            cur = self.raw.cursor()
            try:
                self._insert_flat(
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


def _merge_units(units: Iterable[tuple[Any, ...]], flag: Any) -> list[tuple[Any, ...]]:
    """One ``exposure_unit`` row per (experiment, phase, unit) of ``units`` (rows of that table).

    The earliest exposure gives the variant and ``first_ts`` (stored timestamps are fixed-width
    UTC text, so they compare as time); ``multiple`` when the unit saw several variants.
    """
    merged: dict[tuple[int, int, str], tuple[Any, ...]] = {}
    for row in units:
        key = (row[0], row[1], row[2])
        current = merged.get(key)
        if current is None:  # the common case: the unit's only exposure
            merged[key] = row
            continue
        multiple = flag(bool(current[5]) or bool(row[5]) or current[3] != row[3])
        if row[4] < current[4]:
            merged[key] = (*row[:5], multiple, row[6])
        else:
            merged[key] = (*current[:5], multiple, current[6])
    return list(merged.values())


def _unit_rows(
    new_exposures: Iterable[tuple[Any, ...]], flag: Any, attributes: Mapping[str, str]
) -> list[tuple[Any, ...]]:
    """One ``exposure_unit`` row per (experiment, phase, unit) of the inserted exposure rows
    (``attributes``: the kept attributes' JSON text by event id)."""
    no = flag(False)
    get = attributes.get
    return _merge_units(
        ((r[1], r[2], r[4], r[3], r[5], no, get(r[0])) for r in new_exposures), flag
    )


@dataclass(eq=False)
class _Plan:
    """A request's rows, made from its prepared events and a reading of its experiments.

    Made in the request's thread, before the write lock (:func:`_plan`); the writer only checks
    that the experiments still read the same (``targets``) and otherwise makes it again.
    """

    targets: dict[str, _Target | None]
    exposures: list[tuple[Any, ...]]
    conversions: list[tuple[Any, ...]]
    units: list[tuple[Any, ...]]
    rejected: list[RejectedEvent]
    duplicates: int  # repeats inside the request
    conflicts: int
    late: int  # late exposures among ``exposures``
    # SQLite: the rows' values in one list each, ready to bind; event ids of each table.
    flat: tuple[list[Any], list[Any], list[Any]] | None
    ids: tuple[frozenset[str], frozenset[str]]
    # The kept attributes (JSON text) of exposures that carry dimensions, by event id.
    attributes: dict[str, str] = field(default_factory=dict)


def _plan(items: Sequence[_Item], targets: Mapping[str, _Target | None], *, sqlite: bool) -> _Plan:
    """Resolve a request's exposures, settle its inner repeats, and make its rows.

    A repeat inside the request is compared with the request's first valid occurrence of the
    id (in either table): same payload hash, a duplicate; else a conflict.
    """
    flag: Any = int if sqlite else bool
    received = utcnow().isoformat(" ", "microseconds")[:26] + ("" if sqlite else "+00")
    resolutions: dict[tuple[str, Any, str], _Resolution] = {}
    exposures: list[tuple[Any, ...]] = []
    conversions: list[tuple[Any, ...]] = []
    rejected: list[RejectedEvent] = []
    seen: dict[str, str] = {}  # event_id -> digest of its first valid occurrence
    duplicates = conflicts = late_count = 0
    attributes: dict[str, str] = {}
    for index, is_exposure, event_id, digest, ts, unit, a, b, phase_sent, attrs in items:
        if is_exposure:
            key = (a, phase_sent, b)
            resolution = resolutions.get(key)
            if resolution is None:
                resolution = resolutions[key] = _resolve(targets.get(a), a, phase_sent, b)
            if len(resolution) == 2:
                code, reason = resolution
                rejected.append(RejectedEvent(index=index, error=str(reason), code=str(code)))
                continue
        first = seen.get(event_id)
        if first is not None:
            if first == digest:
                duplicates += 1
            else:
                conflicts += 1
            continue
        seen[event_id] = digest
        if is_exposure:
            exp_id, phase, late = resolution  # type: ignore[misc]
            exposures.append((event_id, exp_id, phase, b, unit, ts, received, digest, flag(late)))
            late_count += late
            if attrs:
                target = targets.get(a)
                kept = _kept_attributes(attrs, target.dimensions if target else ())
                if kept is not None:
                    attributes[event_id] = kept
        else:
            conversions.append((event_id, a, unit, b, ts, received, digest))
    units = _unit_rows(exposures, flag, attributes)
    flat = None
    if sqlite:
        flat = (
            [v for row in exposures for v in row],
            [v for row in conversions for v in row],
            [v for row in units for v in row],
        )
    return _Plan(
        targets=dict(targets),
        exposures=exposures,
        conversions=conversions,
        units=units,
        rejected=rejected,
        duplicates=duplicates,
        conflicts=conflicts,
        late=late_count,
        flat=flat,
        ids=(frozenset(r[0] for r in exposures), frozenset(r[0] for r in conversions)),
        attributes=attributes,
    )


def _experiment_keys(items: Iterable[_Item]) -> set[str]:
    return {item[6] for item in items if item[1]}


@dataclass(eq=False)
class _Job:
    """One request's prepared events, its rows (``plan``), and its verdicts once stored."""

    items: list[_Item]
    rejected: list[RejectedEvent]
    plan: _Plan | None = None
    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    late: int = 0
    committed: bool = False
    error: BaseException | None = None

    def result(self) -> IngestResult:
        self.rejected.sort(key=lambda r: r.index)
        return IngestResult(
            accepted=self.accepted,
            duplicates=self.duplicates,
            conflicts=self.conflicts,
            rejected=self.rejected,
            late=self.late,
        )


class _TargetsSeen:
    """The experiments as the writer last read them, for the request threads' plans.

    A plan made from a reading that is out of date costs only its remaking: the writer reads the
    experiments again in its transaction and compares (:func:`_store`). So a request thread
    whose experiments were all read less than ``TARGETS_FRESH_SECONDS`` ago plans without a
    query of its own.
    """

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, _Target | None]] = {}

    def get(self, keys: Collection[str]) -> dict[str, _Target | None] | None:
        now = time.monotonic()
        out: dict[str, _Target | None] = {}
        for key in keys:
            seen = self._seen.get(key)
            if seen is None or now - seen[0] > TARGETS_FRESH_SECONDS:
                return None
            out[key] = seen[1]
        return out

    def put(self, keys: Collection[str], targets: Mapping[str, _Target]) -> None:
        now = time.monotonic()
        if len(self._seen) > 10_000:  # keys of bad requests must not pile up
            self._seen = {}
        for key in keys:
            self._seen[key] = (now, targets.get(key))


TARGETS_FRESH_SECONDS = 1.0
_targets_seen = _TargetsSeen()


def plan_job(job: _Job, *, sqlite: bool) -> None:
    """Make the job's rows in the calling thread, from a recent reading of its experiments."""
    keys = _experiment_keys(job.items)
    targets = _targets_seen.get(keys)
    if targets is None:
        session = open_session(write=False)
        try:
            read = _Store(session).targets(keys)
        finally:
            session.close()
        _targets_seen.put(keys, read)
        targets = {k: read.get(k) for k in keys}
    job.plan = _plan(job.items, targets, sqlite=sqlite)


def _segments(jobs: Sequence[_Job]) -> list[Sequence[_Job]]:
    """Runs of jobs that may share statements: no event id in two of them (per table).

    Jobs that repeat each other's ids are stored one after the other, so that a later one is
    compared with what an earlier one stored, as if that one had committed first.
    """
    if len(jobs) == 1:
        return [jobs]
    for table in (0, 1):
        sets = [job.plan.ids[table] for job in jobs]  # type: ignore[union-attr]
        if len(frozenset().union(*sets)) != sum(len(s) for s in sets):
            return [[job] for job in jobs]
    return [jobs]


def _store(session: Session, jobs: Sequence[_Job]) -> None:
    """Insert and classify the jobs' events in the session's transaction, and commit.

    Several jobs (requests) in one transaction give each the verdicts it would have had alone,
    in order. A job's plan is made again here if its experiments changed since it was made (or
    it has none), so the transaction decides on what the database holds.
    """
    store = _Store(session)
    flag: Any = int if store.sqlite else bool
    keys: set[str] = set()
    for job in jobs:
        keys |= job.plan.targets.keys() if job.plan is not None else _experiment_keys(job.items)
    fresh = store.targets(keys)
    _targets_seen.put(keys, fresh)
    for job in jobs:
        plan = job.plan
        if plan is None or any(fresh.get(k) != t for k, t in plan.targets.items()):
            job.plan = _plan(
                job.items,
                {k: fresh.get(k) for k in _experiment_keys(job.items)},
                sqlite=store.sqlite,
            )
    for segment in _segments(jobs):
        _store_segment(store, segment, flag)
    session.commit()


class _LazyRows(Sequence[tuple[Any, ...]]):
    """The jobs' rows end to end, joined only if iterated (their count is free)."""

    def __init__(self, parts: list[list[tuple[Any, ...]]]) -> None:
        self.parts = parts
        self.size = sum(len(p) for p in parts)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return chain.from_iterable(self.parts)

    def __getitem__(self, index: Any) -> Any:  # not on the hot path: joins them
        return list(self)[index]


def _flat(plan: _Plan, table: int) -> list[Any]:
    """SQLite: the plan's values of ``table`` (0 exposures, 1 conversions, 2 units) to bind."""
    assert plan.flat is not None  # made for SQLite
    return plan.flat[table]


def _joined(parts: list[list[Any]]) -> list[Any]:
    return list(chain.from_iterable(parts)) if len(parts) > 1 else parts[0]


def _store_segment(store: _Store, jobs: Sequence[_Job], flag: Any) -> None:
    """Insert and classify the rows of jobs that share no event id, in statements shared by all."""
    plans: list[_Plan] = []
    for job in jobs:
        assert job.plan is not None  # _store planned every job
        plans.append(job.plan)
        job.rejected.extend(job.plan.rejected)
        job.duplicates += job.plan.duplicates
        job.conflicts += job.plan.conflicts
    all_new = True
    new_exposures: list[tuple[Any, ...]] = []
    for t, (table, columns) in enumerate(
        (("exposure", EXPOSURE_COLUMNS), ("conversion", CONVERSION_COLUMNS))
    ):
        per_job = [p.exposures if t == 0 else p.conversions for p in plans]
        flat = None
        rows: Sequence[tuple[Any, ...]]
        if store.sqlite:  # SQLite binds the values; the row tuples serve the rare slow path
            flat = _joined([_flat(p, t) for p in plans])
            rows = _LazyRows(per_job)
        else:
            rows = _joined(per_job)
        inserted = store.insert_new(table, columns, rows, flat)
        if inserted is None:  # all new: the common case
            for job, plan, part in zip(jobs, plans, per_job, strict=True):
                job.accepted += len(part)
                if t == 0:
                    job.late += plan.late
            continue
        stored = store.stored_hashes(table, [r[0] for r in rows if r[0] not in inserted])
        digest_at = 7 if t == 0 else 6
        if t == 0:
            all_new = False
        for job, part in zip(jobs, per_job, strict=True):
            for r in part:
                if r[0] in inserted:
                    job.accepted += 1
                    if t == 0:
                        new_exposures.append(r)
                        job.late += 1 if r[8] else 0
                elif stored.get(r[0]) == r[digest_at]:
                    job.duplicates += 1
                else:
                    job.conflicts += 1
    if not all_new:
        kept = {k: v for p in plans for k, v in p.attributes.items()}
        store.upsert_units(_unit_rows(new_exposures, flag, kept))
    elif store.sqlite:  # SQLite upserts row after row: a unit in several jobs is merged there
        store.upsert_units(_joined([p.units for p in plans]), _joined([_flat(p, 2) for p in plans]))
    else:
        store.upsert_units(_merge_units(_joined([p.units for p in plans]), flag))


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
    sqlite = session.connection().dialect.name == "sqlite"
    items, out_rejected = _prepare(
        [vars(e) for _, e in events], [i for i, _ in events], sqlite=sqlite
    )
    job = _Job(items, [*rejected, *out_rejected])
    _store(session, [job])
    job.committed = True
    return job.result()


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


# The request threads of this process parse, validate and plan one at a time. They hold the GIL
# for all of it, so they ran one at a time anyway; what the lock changes is that only one of them
# competes with the writer for the GIL each time the writer comes back from SQLite (at every
# statement), instead of eight, so the writer waits less and the database stays busy. Measured
# with bench/ingest.py: about 15 % more events/s on SQLite, with TRIALBOOK_GIL_SWITCH_MS.
_python_work = threading.Lock()


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
    sqlite = get_engine().dialect.name == "sqlite"
    with _python_work:
        parsed = parse_batch(body)
        items, rejected = _prepare(parsed.events, parsed.indexes, sqlite=sqlite)
        job = _Job(items, parsed.rejected + rejected)
        if items:
            plan_job(job, sqlite=sqlite)
    if items:
        with gate():
            _writer.submit(job)
    return job.result()


class _GroupWriter:
    """Group commit: one thread of this process at a time writes, for every request waiting.

    A request whose events are prepared joins the queue. If no thread is writing, it becomes the
    leader: it takes the queue (FIFO, up to ``max_events`` events, at least one request), stores
    it in one transaction (:func:`_store`), wakes those requests with their verdicts, and hands
    the lead to the first request still queued. Each request is answered only after the commit
    that holds its events.

    Why: on SQLite the transactions of a database are serialized anyway, and one transaction for
    several requests pays once for the commit (an fsync with ``synchronous=FULL``), the statement
    round trips and the GIL hand-overs that the thread holding the write lock waits for while
    other request threads validate (a long C call such as pydantic's keeps the GIL for its whole
    duration). On PostgreSQL it saves the same round trips; the workers (processes) still write
    concurrently. Threads of this process queue here rather than on SQLite's busy handler, which
    polls with sleeps of up to 100 ms.

    If the group's transaction fails, each of its requests is retried in a transaction of its
    own, so one request's failure is never another's.
    """

    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self._lock = threading.Lock()
        self._queue: deque[tuple[_Job, threading.Event]] = deque()
        self._busy = False

    def submit(self, job: _Job) -> None:
        """Store ``job`` (its counters are filled in); raise what its transaction raised."""
        wake = threading.Event()
        with self._lock:
            self._queue.append((job, wake))
            lead = not self._busy  # not busy: the queue was empty
            self._busy = True
        if not lead:
            wake.wait()
            with self._lock:
                lead = (job, wake) in self._queue  # woken to lead, not because it was written
        if lead:
            self._lead()
        if job.error is not None:
            raise job.error
        if not job.committed:  # cannot happen: a leader fails every job it did not commit
            raise RuntimeError("event batch neither committed nor failed")

    def _lead(self) -> None:
        with self._lock:
            group = [self._queue.popleft()]
            size = len(group[0][0].items)
            while self._queue and size + len(self._queue[0][0].items) <= self.max_events:
                size += len(self._queue[0][0].items)
                group.append(self._queue.popleft())
        try:
            self._write([job for job, _ in group])
        except BaseException as exc:  # e.g. KeyboardInterrupt: fail whoever was not written
            for job, _ in group:
                if not job.committed and job.error is None:
                    job.error = exc
            raise
        finally:
            with self._lock:
                if self._queue:
                    self._queue[0][1].set()  # the next leader
                else:
                    self._busy = False
            for _, wake in group:
                wake.set()

    @staticmethod
    def _write(jobs: list[_Job]) -> None:
        try:
            _write_jobs(jobs)
            return
        except Exception as exc:
            if len(jobs) == 1:
                jobs[0].error = exc
                return
        for job in jobs:  # one at a time: only the failing request fails
            job.accepted = job.duplicates = job.conflicts = job.late = 0
            job.rejected = [r for r in job.rejected if r.code == "invalid"]
            try:
                _write_jobs([job])
            except Exception as exc:
                job.error = exc


class _WriterConnection:
    """The writer's own database connection, kept from one transaction to the next.

    On SQLite a connection's page cache survives between its transactions as long as no other
    connection wrote meanwhile; the pool hands out its connections in turn (readers too), so a
    writer drawing from it starts nearly every transaction with a cold cache and reads the
    indexes' pages again. Kept, the connection is the only one that writes events, and its cache
    (larger than the default 2 MiB) stays warm: about 15 % more events/s in bench/ingest.py.
    Only the leader of the group commit uses it, one thread at a time. A new engine (tests
    switch databases) or a failed transaction gets a fresh connection.
    """

    def __init__(self) -> None:
        self._engine: Engine | None = None
        self._connection: Connection | None = None

    def session(self) -> Session:
        """A session whose transaction will start with ``BEGIN IMMEDIATE`` on SQLite."""
        engine = get_engine()
        if self._connection is None or self._engine is not engine:
            self.close()
            self._connection = engine.connect().execution_options(**{IMMEDIATE: True})
            self._engine = engine
            if engine.dialect.name == "sqlite":  # room for the indexes' hot pages
                self._connection.exec_driver_sql(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
                self._connection.commit()
        return Session(bind=self._connection, expire_on_commit=False)

    def close(self) -> None:
        if self._connection is not None:
            with suppress(Exception):  # already broken: the pool discards it
                self._connection.close()
        self._connection = None


def _write_jobs(jobs: list[_Job]) -> None:
    """Store the jobs in one transaction on the writer's connection; mark them committed."""
    session = _connection.session()
    try:
        _store(session, jobs)
    except BaseException:
        session.close()
        _connection.close()
        raise
    session.close()
    for job in jobs:
        job.committed = True


_connection = _WriterConnection()
atexit.register(_connection.close)


def close_writer() -> None:
    """Close the writer's connection (application shutdown; the next write opens another)."""
    _connection.close()


GROUP_MAX_EVENTS = 20_000
WRITER_CACHE_KIB = 64 * 1024  # SQLite page cache of the writer's connection
_writer = _GroupWriter(GROUP_MAX_EVENTS)
