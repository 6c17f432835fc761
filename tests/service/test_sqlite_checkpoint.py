"""The WAL checkpointer: the server copies SQLite's WAL from a background thread, not in commits."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from service.db import SQLITE_AUTOCHECKPOINT_PAGES, WalCheckpointer, make_engine


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Any:
    engine = make_engine(f"sqlite:///{tmp_path / 'wal.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    yield engine
    engine.dispose()


def write(engine: Any, n: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "x" * 500}] * n)


def test_connections_leave_checkpoints_to_the_thread_up_to_a_bound(sqlite_engine):
    with sqlite_engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
    assert pages == SQLITE_AUTOCHECKPOINT_PAGES


def test_a_checkpoint_copies_every_committed_frame(sqlite_engine):
    write(sqlite_engine, 2000)
    busy, frames, done = WalCheckpointer(sqlite_engine).checkpoint()
    assert busy == 0 and frames > 0 and done == frames
    with sqlite_engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM t").scalar_one() == 2000


def test_the_thread_checkpoints_while_running_and_stops(sqlite_engine):
    calls: list[tuple[int, int, int]] = []
    done = threading.Event()

    class Counting(WalCheckpointer):
        def checkpoint(self) -> tuple[int, int, int]:
            result = super().checkpoint()
            calls.append(result)
            if result[1] > 0 and result[2] == result[1]:
                done.set()
            return result

    checkpointer = Counting(sqlite_engine, interval=0.01)
    checkpointer.start()
    try:
        write(sqlite_engine, 500)
        assert done.wait(10), calls
    finally:
        checkpointer.stop()
    assert checkpointer._thread is None
    count = len(calls)
    write(sqlite_engine, 10)
    threading.Event().wait(0.1)
    assert len(calls) == count  # stopped: no more checkpoints


def test_nothing_to_do_on_postgresql():
    engine = make_engine("postgresql://nobody@127.0.0.1:1/none")  # never connected
    checkpointer = WalCheckpointer(engine)
    checkpointer.start()
    assert checkpointer._thread is None
    checkpointer.stop()
    engine.dispose()
