"""The spool: unsent events kept on disk (standard-library :mod:`sqlite3`) across process restarts.

Layout
------
``spool_dir`` holds one SQLite file per live client, ``spool-<pid>-<random>.sqlite3``, with a
lock file beside it (``.lock``, held with ``flock`` for the client's lifetime). A table
``event(seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT)`` keeps each event's JSON text exactly as
it is sent, ``event_id`` included, so a resend after a crash is a duplicate on the server (storage
is idempotent), never a second event.

On opening, the files of clients that are gone (their lock is free: the process exited or was
killed) are adopted: their rows are copied into the new file in one transaction, then the old
file is removed. A crash between the two steps leaves the rows in both files: they are sent twice
and the server counts the second copy as a duplicate. Several processes (e.g. web workers) may
share one ``spool_dir``. Without ``fcntl`` (Windows) there is one file, ``spool.sqlite3``, and no
adoption: one process per directory.

Durability
----------
WAL journal with ``synchronous=NORMAL``: a committed row survives the process being killed
(``kill -9``); only an operating-system crash or power loss may lose the last commits.

Only the sender thread writes in normal operation; a lock serializes the rare call from
``close()`` when the sender is stuck in a request.

Fork
----
SQLite keeps process-wide mutexes (its allocator's, its file-system layer's). A ``fork()`` while a
sender thread is inside a SQLite call would hand the child those mutexes held by a thread that
does not exist there, and the child's first SQLite call (opening its own spool) would wait
forever. Every SQLite call here runs under ``_FORK_GUARD``, which ``os.register_at_fork`` takes
before a fork and gives back on both sides after it: a fork waits for the call in progress (one
transaction, at most ``spool_max_events`` rows) instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["Spool"]

logger = logging.getLogger("trialbook")

_SCHEMA_VERSION = 1
_CHUNK = 256  # rows per executemany; the GIL is handed back between chunks (time.sleep(0))
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS event (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL)"
)

# Held around every SQLite call of every spool in the process, and across fork() (see Fork).
_FORK_GUARD = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_FORK_GUARD.acquire,
        after_in_parent=_FORK_GUARD.release,
        after_in_child=_FORK_GUARD.release,
    )


def _try_lock(path: Path) -> IO[bytes] | None:
    """Open ``path`` and take an exclusive ``flock`` without waiting; None if someone holds it."""
    handle = open(path, "ab")  # noqa: SIM115 - held open for the client's lifetime
    if fcntl is None:  # pragma: no cover - Windows
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _remove(db: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{db}{suffix}")


class Spool:
    """Events waiting for the server's acknowledgement, on disk.

    Parameters
    ----------
    directory : Path
        Where the spool files live (created if missing).
    max_events : int
        Bound of the events this spool holds; the caller drops (and counts) what does not fit.

    Raises
    ------
    OSError, sqlite3.Error
        When the directory or the file cannot be used (the client then runs without a spool).
    """

    def __init__(self, directory: Path, max_events: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.max_events = max(1, int(max_events))
        self._lock = threading.Lock()
        self.path: Path
        if fcntl is None:  # pragma: no cover - Windows
            self.path = directory / "spool.sqlite3"
        else:
            self.path = directory / f"spool-{os.getpid()}-{secrets.token_hex(4)}.sqlite3"
        self._lock_path = self.path.with_suffix(".lock")
        handle = _try_lock(self._lock_path)
        if handle is None:  # pragma: no cover - a fresh random name is never held
            raise OSError(f"spool lock {self._lock_path} is held")
        self._lock_handle: IO[bytes] | None = handle
        with _FORK_GUARD:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        self.recovered = self._adopt(directory) if fcntl is not None else 0
        with _FORK_GUARD:
            self.count: int = self._conn.execute("SELECT COUNT(*) FROM event").fetchone()[0]
        if fcntl is None:  # pragma: no cover - Windows
            self.recovered = self.count
        if self.recovered:
            logger.info("trialbook: %d unsent events recovered from %s", self.recovered, directory)

    def _adopt(self, directory: Path) -> int:
        """Move the rows of spool files whose client is gone into this one; return how many."""
        moved = 0
        for db in sorted(directory.glob("spool-*.sqlite3")):
            if db == self.path:
                continue
            lock_path = db.with_suffix(".lock")
            handle = _try_lock(lock_path)
            if handle is None:
                continue  # its client is alive
            try:
                if not db.exists():  # adopted by another process meanwhile
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(lock_path)
                    continue
                with _FORK_GUARD:
                    moved += self._copy_rows(db)
                _remove(db)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock_path)
            except sqlite3.Error as exc:
                logger.error("trialbook: cannot read spool file %s (%s): set aside", db, exc)
                with contextlib.suppress(OSError):
                    os.replace(db, db.with_suffix(".bad"))
            finally:
                handle.close()
        return moved

    def _copy_rows(self, db: Path) -> int:
        conn = self._conn
        conn.execute("ATTACH DATABASE ? AS old", (str(db),))
        try:
            tables = conn.execute(
                "SELECT COUNT(*) FROM old.sqlite_master WHERE type = 'table' AND name = 'event'"
            ).fetchone()[0]
            if not tables:
                return 0
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.total_changes
                conn.execute("INSERT INTO event (body) SELECT body FROM old.event ORDER BY seq")
                moved = conn.total_changes - before
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return moved
        finally:
            conn.execute("DETACH DATABASE old")

    def add(self, bodies: list[str]) -> None:
        """Append events (their JSON texts) in one transaction.

        Raises
        ------
        sqlite3.Error
            When the disk refuses (full, read-only): nothing was added.
        """
        with self._lock, _FORK_GUARD:
            conn = self._conn
            conn.execute("BEGIN")
            try:
                for start in range(0, len(bodies), _CHUNK):
                    conn.executemany(
                        "INSERT INTO event (body) VALUES (?)",
                        [(b,) for b in bodies[start : start + _CHUNK]],
                    )
                    time.sleep(0)  # hand the GIL back to the application between chunks
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self.count += len(bodies)

    def last_seq(self) -> int:
        """The newest row's sequence number (0 when empty)."""
        with self._lock, _FORK_GUARD:
            row = self._conn.execute("SELECT MAX(seq) FROM event").fetchone()
        return int(row[0] or 0)

    def peek(self, limit: int, up_to: int) -> list[tuple[int, str]]:
        """The oldest ``limit`` rows with ``seq <= up_to``, as ``(seq, body)``."""
        with self._lock, _FORK_GUARD:
            rows = self._conn.execute(
                "SELECT seq, body FROM event WHERE seq <= ? ORDER BY seq LIMIT ?", (up_to, limit)
            ).fetchall()
        return [(int(seq), str(body)) for seq, body in rows]

    def delete(self, seqs: list[int]) -> None:
        """Remove rows (acknowledged by the server, or dropped and counted)."""
        if not seqs:
            return
        with self._lock, _FORK_GUARD:
            conn = self._conn
            conn.execute("BEGIN")
            try:
                before = conn.total_changes
                conn.executemany("DELETE FROM event WHERE seq = ?", [(s,) for s in seqs])
                removed = conn.total_changes - before
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self.count -= removed

    def close(self) -> None:
        """Close the file; an empty spool file is removed (nothing to recover)."""
        with self._lock:
            if self._lock_handle is None:
                return
            empty = self.count == 0
            try:
                with _FORK_GUARD:
                    self._conn.close()
            finally:
                if empty and fcntl is not None:
                    _remove(self.path)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._lock_path)
                self._lock_handle.close()
                self._lock_handle = None
