"""Fixtures of the SDK end-to-end tests (helpers in ``live_server.py``).

Every live server runs against a SQLite file of its own, whatever ``TRIALBOOK_TEST_DATABASE_URL``
says (see ``live_server.py``), so these tests pass unchanged when the suite runs on PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Lets the test modules import live_server under any pytest import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from live_server import Provisioned, new_server, provision

from tests.support.live import migrate


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once by ``python -m service.cli migrate``; servers copy it."""
    path = tmp_path_factory.mktemp("sdk-e2e-template") / "template.db"
    migrate(f"sqlite:///{path}")
    # Fold the WAL (if any) into the main file so a plain copy is complete.
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert conn.execute("SELECT COUNT(*) FROM experiment").fetchone() == (0,)
    finally:
        conn.close()
    return path


@pytest.fixture(scope="module")
def live(
    migrated_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Provisioned]:
    """One provisioned server shared by the tests of a module (they use disjoint units)."""
    server = new_server(migrated_template, tmp_path_factory.mktemp("sdk-e2e-live"))
    server.start()
    try:
        yield provision(server)
    finally:
        server.stop()


@pytest.fixture
def own_live(migrated_template: Path, tmp_path: Path) -> Iterator[Provisioned]:
    """A provisioned server for one test alone (the test may kill and restart it)."""
    server = new_server(migrated_template, tmp_path / "server")
    server.start()
    try:
        yield provision(server)
    finally:
        server.stop()
