"""Helpers of the SDK end-to-end tests: a real ``trialbook serve`` process and its own SQLite file.

Every server here runs against a SQLite database of its own under ``tmp_path`` (migrated once per
session with ``python -m service.cli migrate`` into a template file, then copied), whatever
``TRIALBOOK_TEST_DATABASE_URL`` says: these tests exercise the SDK and the HTTP wire, not the
database backend, so they pass unchanged when the rest of the suite runs against PostgreSQL.
The stored rows are read straight from that file with :mod:`sqlite3`.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from trialbook._transport import Request, Response, UrllibTransport
from trialbook.errors import TransportError

from tests.support.live import LiveServer

ADMIN_KEY = "tb-e2e-admin-" + secrets.token_hex(16)

# The experiments every live server is provisioned with.
CHECKOUT = "e2e-checkout"  # 3 variants, 80 % traffic, targeting on country, two overrides
BANNER = "e2e-banner"  # 2 variants, everyone (the OpenFeature tests)
PAUSED = "e2e-paused"  # started then paused
TARGETED_COUNTRIES = ["FR", "DE", "ES"]
CHECKOUT_OVERRIDES = {"unit-00007": "blue", "unit-00042": "control"}


class E2EServer(LiveServer):
    """``python -m service.cli serve`` (1 worker) on one SQLite file, whose rows it can read."""

    @property
    def db_path(self) -> Path:
        """The server's SQLite file."""
        return Path(self.database_url.removeprefix("sqlite:///"))

    # ------------------------------------------------------------------ reading the database
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of one query on the server's SQLite file (safe while it runs: WAL).

        Not opened ``mode=ro``: after a ``kill -9`` the WAL index may need recovery, which only a
        read-write connection may run.
        """
        conn = sqlite3.connect(self.db_path, timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def experiment_id(self, key: str) -> int:
        rows = self.query("SELECT id FROM experiment WHERE key = ?", (key,))
        assert len(rows) == 1, rows
        return int(rows[0][0])


@dataclass(frozen=True)
class Provisioned:
    """A running live server with its experiments started and an SDK key."""

    server: E2EServer
    admin: dict[str, str]
    sdk_key: str

    @property
    def sdk_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.sdk_key}"}


def _post(http: httpx.Client, path: str, body: dict[str, Any] | None, expected: int) -> Any:
    r = http.post(path, json=body) if body is not None else http.post(path)
    assert r.status_code == expected, f"{path}: {r.status_code} {r.text}"
    return r.json()


def _experiment_body(key: str, variants: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "key": key,
        "title": f"E2E {key}",
        "owner": "sdk-e2e@example.com",
        "hypothesis": "The SDK and the server agree on every assignment",
        "variants": variants,
        "primary_metric": {"metric": "purchase", "mde": 0.1},
        "baseline": {"rate": 0.1},
    } | extra


def provision(server: E2EServer) -> Provisioned:
    """Through HTTP only: a metric, three experiments (two running, one paused), an SDK key."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=server.url, headers=admin, timeout=30) as http:
        _post(
            http,
            "/v1/metrics",
            {"key": "purchase", "name": "Purchase", "type": "binomial", "event": "purchase"},
            201,
        )
        _post(
            http,
            "/v1/experiments",
            _experiment_body(
                CHECKOUT,
                [
                    {"key": "control", "weight": 0.4, "is_control": True},
                    {"key": "blue", "weight": 0.3},
                    {"key": "green", "weight": 0.3},
                ],
                traffic_fraction=0.8,
                targeting={"attribute": "country", "op": "in", "value": TARGETED_COUNTRIES},
                overrides=CHECKOUT_OVERRIDES,
            ),
            201,
        )
        two = [
            {"key": "control", "weight": 0.5, "is_control": True},
            {"key": "treatment", "weight": 0.5},
        ]
        _post(http, "/v1/experiments", _experiment_body(BANNER, two), 201)
        _post(http, "/v1/experiments", _experiment_body(PAUSED, two), 201)
        for key in (CHECKOUT, BANNER, PAUSED):
            started = _post(http, f"/v1/experiments/{key}/start", None, 200)
            assert started["status"] == "running", started
        paused = _post(http, f"/v1/experiments/{PAUSED}/pause", None, 200)
        assert paused["status"] == "paused", paused
        created = _post(http, "/v1/keys", {"name": "sdk-e2e", "role": "sdk"}, 201)
    assert created["role"] == "sdk"
    return Provisioned(server=server, admin=admin, sdk_key=str(created["key"]))


def new_server(template: Path, directory: Path) -> E2EServer:
    """A server (not started) on a copy of the migrated ``template`` database."""
    directory.mkdir(parents=True, exist_ok=True)
    db_path = directory / "server.db"
    shutil.copyfile(template, db_path)
    return E2EServer(
        database_url=f"sqlite:///{db_path}",
        log=directory / "server.log",
        bootstrap_admin_key=ADMIN_KEY,
        cli=True,
    )


class RecordingTransport:
    """The SDK's own transport, recording every ``POST /v1/events`` and how it ended.

    ``sent`` holds the event ids of every request body (retries included), ``acknowledged`` those
    of requests answered 2xx, ``failures`` the requests that got no HTTP answer.

    With ``crash`` and ``crash_after_acks=n``, the answer to the ``n+1``-th request the server
    acknowledges never reaches the SDK: ``crash()`` (a ``kill -9`` of the server) runs once the
    2xx has arrived and the SDK sees a network error instead. That is the worst moment to die:
    the batch is committed but the SDK must retry it. Its ids are kept in ``lost``.
    """

    def __init__(
        self, crash: Callable[[], object] | None = None, crash_after_acks: int | None = None
    ) -> None:
        self.inner = UrllibTransport()
        self.lock = threading.Lock()
        self.sent: list[list[str]] = []
        self.acknowledged: list[list[str]] = []
        self.statuses: list[int] = []
        self.failures = 0
        self.crash = crash
        self.crash_after_acks = crash_after_acks
        self.lost: list[str] | None = None
        self.crashed = threading.Event()

    def send(self, request: Request, timeout: float) -> Response:
        """Forward to :class:`UrllibTransport`, recording events requests."""
        if request.method != "POST" or not request.url.endswith("/v1/events"):
            return self.inner.send(request, timeout)
        assert request.body is not None
        ids = [e["event_id"] for e in json.loads(request.body)["events"]]
        with self.lock:
            self.sent.append(ids)
        try:
            response = self.inner.send(request, timeout)
        except Exception:
            with self.lock:
                self.failures += 1
            raise
        ok = 200 <= response.status < 300
        with self.lock:
            self.statuses.append(response.status)
            lose = (
                ok
                and self.crash is not None
                and self.lost is None
                and len(self.acknowledged) == self.crash_after_acks
            )
            if lose:
                self.lost = ids
                self.failures += 1
            elif ok:
                self.acknowledged.append(ids)
        if lose:
            assert self.crash is not None
            self.crash()
            self.crashed.set()
            raise TransportError("connection reset before the answer (the server was killed)")
        return response

    def sent_ids(self) -> set[str]:
        with self.lock:
            return {i for batch in self.sent for i in batch}

    def acknowledged_ids(self) -> set[str]:
        with self.lock:
            return {i for batch in self.acknowledged for i in batch}
