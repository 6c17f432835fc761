"""Event ingestion: validation, idempotent storage, first exposures per unit.

Flow of a ``POST /v1/events`` request (:func:`ingest_body`), one module a step:

1. Parse (:func:`service.events.parse.parse_batch`): one pass of pydantic-core's JSON validator
   over the raw body into plain dicts, timestamps kept as RFC 3339 text; only if that fails,
   :func:`json.loads` and per-event validation with the models, so a malformed event is
   rejected with its index and the others go on.
2. Prepare (:func:`service.events.prepare.prepare`): per event the UTC timestamp texts (cut
   from the text sent when it is at UTC), the payload hash and the values of its row
   (an :class:`~service.events.prepare.Item`).
3. Plan (:mod:`service.events.plan`): resolve the exposures against their experiments (as the
   writer last read them, at most a second ago), settle repeats inside the request, and make
   the rows, the ``exposure_unit`` rows and, on SQLite, the values to bind in one flat list per
   table. Steps 1 to 3 run in the request's thread before any database lock, one request at a
   time (``python_work``), while the writer inserts.
4. A per-process gate (:class:`IngestGate`) bounds the requests waiting for the write lock;
   past it the request is shed with a 429 and ``Retry-After`` (setting
   ``TRIALBOOK_INGEST_MAX_CONCURRENCY``).
5. Group commit (:mod:`service.events.writer`): the requests waiting while a transaction runs
   are written together in the next one, each still answered with its own verdicts after that
   commit, with the statements of :mod:`service.events.store`. Only then is the answer sent, so
   a 2xx means the accepted events are durable.

Every tuning knob of these steps, with the measurement behind it: :mod:`service.events.tuning`.

Insert statements:

- SQLite: multi-row ``INSERT ... VALUES (...), ... ON CONFLICT(event_id) DO NOTHING`` of a few
  fixed sizes, cached compiled; the inserted rows are known from ``total_changes`` and, when
  some were already stored, from the rowids just below the last one inserted (the write lock is
  held). ``exposure_unit`` likewise, with an upsert. The WAL is checkpointed by a background
  thread (``service.db.WalCheckpointer``), not in the writer's commits.
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

import threading
from collections.abc import Sequence

from sqlmodel import Session

from service.config import get_settings
from service.db import get_engine
from service.errors import TooManyRequestsError
from service.events.models import EventIn, IngestResult, RejectedEvent
from service.events.parse import ParsedBatch, parse_batch
from service.events.plan import Job, plan_job
from service.events.prepare import payload_hash, prepare
from service.events.tuning import RETRY_AFTER_SECONDS
from service.events.writer import store_jobs, submit

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
    items, out_rejected = prepare(
        [vars(e) for _, e in events], [i for i, _ in events], sqlite=sqlite
    )
    job = Job(items, [*rejected, *out_rejected])
    store_jobs(session, [job])
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


# The request threads of this process parse, validate and plan one at a time: the writer then
# waits less for the GIL (why, and what it gained: service.events.tuning).
python_work = threading.Lock()


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
    with python_work:
        parsed = parse_batch(body)
        items, rejected = prepare(parsed.events, parsed.indexes, sqlite=sqlite)
        job = Job(items, parsed.rejected + rejected)
        if items:
            plan_job(job, sqlite=sqlite)
    if items:
        with gate():
            submit(job)
    return job.result()
