"""The writer of event ingestion: group commit on its own connection (steps 4 and 5 of
:mod:`service.events.service`).

The requests waiting while a transaction runs are written together in the next one
(:class:`GroupWriter`), on the writer's own connection (:class:`WriterConnection`), each still
answered with its own verdicts after that commit. The transaction (:func:`store_jobs`; SQLite
``BEGIN IMMEDIATE``) reads the experiments again and remakes a plan made on an older reading,
inserts the rows with the fastest idempotent statement of the database, compares the payload
hash of every event that was already stored (same hash: duplicate; different: conflict, the
stored event is kept), upserts ``exposure_unit`` for the newly inserted exposures, and commits.
Why each of these: :mod:`service.events.tuning`.

The app's lifespan calls :func:`stop_writer` at shutdown; a process that wrote events without
the app (the CLI, a script) needs no call: its connection closes with the process, and every
answered write was committed.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import suppress
from itertools import chain
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from service.db import IMMEDIATE, get_engine
from service.events.plan import (
    Job,
    Plan,
    experiment_keys,
    make_plan,
    merge_units,
    targets_seen,
    unit_rows,
)
from service.events.store import CONVERSION_COLUMNS, EXPOSURE_COLUMNS, Store
from service.events.tuning import GROUP_MAX_EVENTS, WRITER_CACHE_KIB

__all__ = ["GroupWriter", "WriterConnection", "stop_writer", "store_jobs", "submit"]


def segments(jobs: Sequence[Job]) -> list[Sequence[Job]]:
    """Runs of jobs that may share statements: no event id in two of them (per table).

    Jobs that repeat each other's ids are stored one after the other, so that a later one is
    compared with what an earlier one stored, as if that one had committed first.
    """
    if len(jobs) == 1:
        return [jobs]
    for table in (0, 1):
        sets = [job.plan.ids[table] for job in jobs if job.plan is not None]  # all planned
        if len(frozenset().union(*sets)) != sum(len(s) for s in sets):
            return [[job] for job in jobs]
    return [jobs]


def store_jobs(session: Session, jobs: Sequence[Job]) -> None:
    """Insert and classify the jobs' events in the session's transaction, and commit.

    Several jobs (requests) in one transaction give each the verdicts it would have had alone,
    in order. A job's plan is made again here if its experiments changed since it was made (or
    it has none), so the transaction decides on what the database holds.
    """
    store = Store(session)
    flag: Any = int if store.sqlite else bool
    keys: set[str] = set()
    for job in jobs:
        keys |= job.plan.targets.keys() if job.plan is not None else experiment_keys(job.items)
    fresh = store.targets(keys)
    targets_seen.put(keys, fresh)
    for job in jobs:
        plan = job.plan
        if plan is None or any(fresh.get(k) != t for k, t in plan.targets.items()):
            job.plan = make_plan(
                job.items,
                {k: fresh.get(k) for k in experiment_keys(job.items)},
                sqlite=store.sqlite,
            )
    for segment in segments(jobs):
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


def _flat(plan: Plan, table: int) -> list[Any]:
    """SQLite: the plan's values of ``table`` (0 exposures, 1 conversions, 2 units) to bind."""
    assert plan.flat is not None  # made for SQLite
    return plan.flat[table]


def _joined(parts: list[list[Any]]) -> list[Any]:
    return list(chain.from_iterable(parts)) if len(parts) > 1 else parts[0]


def _store_segment(store: Store, jobs: Sequence[Job], flag: Any) -> None:
    """Insert and classify the rows of jobs that share no event id, in statements shared by all."""
    plans: list[Plan] = []
    for job in jobs:
        assert job.plan is not None  # store_jobs planned every job
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
        store.upsert_units(unit_rows(new_exposures, flag, kept))
    elif store.sqlite:  # SQLite upserts row after row: a unit in several jobs is merged there
        store.upsert_units(_joined([p.units for p in plans]), _joined([_flat(p, 2) for p in plans]))
    else:
        store.upsert_units(merge_units(_joined([p.units for p in plans]), flag))


class GroupWriter:
    """Group commit: one thread of this process at a time writes, for every request waiting.

    A request whose events are prepared joins the queue. If no thread is writing, it becomes the
    leader: it takes the queue (FIFO, up to ``max_events`` events, at least one request), stores
    it in one transaction (:func:`store_jobs`), wakes those requests with their verdicts, and hands
    the lead to the first request still queued. Each request is answered only after the commit
    that holds its events.

    Why (one fsync, fewer round trips and GIL hand-overs per commit): :mod:`service.events.tuning`.

    If the group's transaction fails, each of its requests is retried in a transaction of its
    own, so one request's failure is never another's.
    """

    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self._lock = threading.Lock()
        self._queue: deque[tuple[Job, threading.Event]] = deque()
        self._busy = False

    def submit(self, job: Job) -> None:
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
    def _write(jobs: list[Job]) -> None:
        try:
            write_jobs(jobs)
            return
        except Exception as exc:
            if len(jobs) == 1:
                jobs[0].error = exc
                return
        for job in jobs:  # one at a time: only the failing request fails
            job.accepted = job.duplicates = job.conflicts = job.late = 0
            job.rejected = [r for r in job.rejected if r.code == "invalid"]
            try:
                write_jobs([job])
            except Exception as exc:
                job.error = exc


class WriterConnection:
    """The writer's own database connection, kept from one transaction to the next.

    On SQLite its page cache stays warm between transactions (why, and what it gained:
    :mod:`service.events.tuning`).
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


def write_jobs(jobs: list[Job]) -> None:
    """Store the jobs in one transaction on the writer's connection; mark them committed."""
    session = _connection.session()
    try:
        store_jobs(session, jobs)
    except BaseException:
        session.close()
        _connection.close()
        raise
    session.close()
    for job in jobs:
        job.committed = True


_connection = WriterConnection()


def stop_writer() -> None:
    """Close the writer's connection (the app's shutdown; the next write opens another)."""
    _connection.close()


_writer = GroupWriter(GROUP_MAX_EVENTS)


def submit(job: Job) -> None:
    """Store ``job`` with the process's group commit; raise what its transaction raised."""
    _writer.submit(job)
