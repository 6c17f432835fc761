"""Fixtures of the warehouse tests: a live server on the test database, warehouses per engine."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.live import LiveServer

# The dataset module (wh_dataset.py) beside this file, imported by name by the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def live(tmp_path: Path, engine: Any, keys: dict[str, dict[str, str]]) -> Iterator[Any]:
    """A real server (uvicorn subprocess) on the test database, and an httpx client for it."""
    srv = LiveServer(database_url=os.environ["TRIALBOOK_DATABASE_URL"], log=tmp_path / "server.log")
    srv.start(timeout=90)
    try:
        with httpx.Client(base_url=srv.url, timeout=300) as client:
            yield client
    finally:
        srv.stop()
