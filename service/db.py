"""Database engine, sessions and column types shared by every domain.

SQLite (the default) runs in WAL mode with a busy timeout and ``synchronous=FULL`` so that a
committed transaction survives a crash; write requests open their transaction with
``BEGIN IMMEDIATE`` so that concurrent writers queue on the busy timeout instead of failing with
"database is locked" when a read transaction tries to upgrade. PostgreSQL is reached through
psycopg 3 with the same models and migrations.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import DateTime, event
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, create_engine

from service.config import get_settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
# SQLite checkpoints the WAL in the committing transaction once it holds this many pages. The
# server checkpoints from a background thread instead (WalCheckpointer), so this is only the
# bound for processes without one (CLI, tests): 10,000 pages of 4 KiB.
SQLITE_AUTOCHECKPOINT_PAGES = 10_000
SQLITE_CHECKPOINT_SECONDS = 0.25
IMMEDIATE = "trialbook_immediate"


def utcnow() -> datetime:
    """Current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware.

    SQLite keeps no time zone; PostgreSQL stores ``timestamptz``. Either way the application only
    ever sees aware UTC datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def normalize_url(url: str) -> str:
    """Map plain ``postgresql://`` URLs to the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def make_engine(url: str) -> Engine:
    """Create an engine configured for SQLite or PostgreSQL."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event decide how transactions start (see below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@lru_cache
def get_engine() -> Engine:
    """The process-wide engine for the configured database URL."""
    return make_engine(get_settings().database_url)


def open_session(*, write: bool = False) -> Session:
    """Open a session; ``write=True`` takes SQLite's write lock at the start of the transaction.

    The one idiom: ``with open_session(write=True) as session: ...`` (a Session is its own
    context manager: leaving the block closes it, rolling back whatever was not committed).
    """
    session = Session(get_engine(), expire_on_commit=False)
    session.connection(execution_options={IMMEDIATE: write})
    return session


class WalCheckpointer:
    """Copy the SQLite WAL into the database file from a background thread.

    Left to itself, SQLite checkpoints inside the commit that grows the WAL past
    ``wal_autocheckpoint`` pages: with event batches that is nearly every commit, and the
    writer (one thread per process, see service.events) waits for the copy and its fsync. Here
    a ``PASSIVE`` checkpoint runs every ``interval`` seconds on another connection: it never
    blocks readers or the writer, and the driver releases the GIL while it runs. Durability is
    unchanged: a commit is still fsynced to the WAL (``synchronous=FULL``).

    Parameters
    ----------
    engine : Engine
        A SQLite engine (other dialects: :meth:`start` does nothing).
    interval : float
        Seconds between checkpoints.
    """

    def __init__(self, engine: Engine, interval: float = SQLITE_CHECKPOINT_SECONDS) -> None:
        self.engine = engine
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.engine.dialect.name != "sqlite" or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def checkpoint(self) -> tuple[int, int, int]:
        """One passive checkpoint: (busy, frames in the WAL, frames checkpointed)."""
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
            row = cursor.fetchone()
            cursor.close()
            assert row is not None  # the pragma always answers one row
            return int(row[0]), int(row[1]), int(row[2])
        finally:
            connection.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.checkpoint()
            except Exception:  # e.g. the file was removed under a test: try again later
                logging.getLogger("trialbook").exception("WAL checkpoint failed")
