"""Fixtures for the event-ingestion tests: event factories, row counts, a real uvicorn server."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.live import LiveServer

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Events:
    """Event body factories with seeded, reproducible ids."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def exposure(
        self,
        unit_id: str,
        variant: str = "control",
        *,
        experiment: str = "new-checkout",
        at: datetime = T0,
        **extra: Any,
    ) -> dict[str, Any]:
        return {
            "event_id": self.new_id(),
            "type": "exposure",
            "experiment": experiment,
            "variant": variant,
            "unit_id": unit_id,
            "timestamp": iso(at),
        } | extra

    def conversion(
        self, unit_id: str, name: str = "purchase", *, at: datetime = T0, **extra: Any
    ) -> dict[str, Any]:
        return {
            "event_id": self.new_id(),
            "type": "conversion",
            "name": name,
            "unit_id": unit_id,
            "timestamp": iso(at),
        } | extra

    def mixed(self, n: int, *, prefix: str = "u") -> list[dict[str, Any]]:
        """``n`` valid events: alternating exposures and conversions over n/2 units."""
        out = []
        for i in range(n):
            unit = f"{prefix}{i // 2}"
            at = T0 + timedelta(seconds=i)
            if i % 2 == 0:
                out.append(self.exposure(unit, self.rng.choice(["control", "treatment"]), at=at))
            else:
                out.append(self.conversion(unit, value=round(self.rng.uniform(0, 100), 2), at=at))
        return out


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def running(make_experiment: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """The conftest experiment `new-checkout` (control/treatment), started."""
    return make_experiment(start=True)


@pytest.fixture
def count(engine: Any) -> Callable[..., int]:
    """``count(table, where="")``: rows in a table, read straight from the database."""

    def run(table: str, where: str = "", **params: Any) -> int:
        sql = f"SELECT COUNT(*) FROM {table}" + (f" WHERE {where}" if where else "")
        with engine.connect() as conn:
            return int(conn.execute(text(sql), params).scalar_one())

    return run


@pytest.fixture
def stored_ids(engine: Any) -> Callable[[], list[str]]:
    def run() -> list[str]:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT event_id FROM exposure UNION ALL SELECT event_id FROM conversion")
            ).all()
        return [r[0] for r in rows]

    return run


@pytest.fixture
def server(tmp_path: Path, engine: Any) -> Iterator[Callable[[int], LiveServer]]:
    """``server(workers)``: a uvicorn process (not started) against the test database."""
    started: list[LiveServer] = []

    def make(workers: int = 1) -> LiveServer:
        srv = LiveServer(
            database_url=os.environ["TRIALBOOK_DATABASE_URL"],
            log=tmp_path / "server.log",
            workers=workers,
        )
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
