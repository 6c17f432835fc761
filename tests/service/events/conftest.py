"""Fixtures for the event-ingestion tests: event factories, row counts, a real uvicorn server."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

REPO = Path(__file__).resolve().parents[3]
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
def sdk(keys: dict[str, dict[str, str]]) -> dict[str, str]:
    return keys["sdk"]


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``uvicorn service.app:app`` in a subprocess against the test database."""

    def __init__(self, workers: int, log: Path) -> None:
        self.port = free_port()
        self.workers = workers
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = os.environ | {"TRIALBOOK_DATABASE_URL": os.environ["TRIALBOOK_DATABASE_URL"]}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "service.app:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                    "--log-level",
                    "warning",
                ],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill() reaches every worker
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("server did not start: " + self.log.read_text())

    def kill(self) -> None:
        """``kill -9`` the server (and, with several workers, its whole process group)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def server(tmp_path: Path, engine: Any) -> Iterator[Callable[[int], Server]]:
    started: list[Server] = []

    def make(workers: int = 1) -> Server:
        srv = Server(workers, tmp_path / "server.log")
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
