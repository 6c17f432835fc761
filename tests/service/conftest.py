"""Fixtures shared by the service's domains: SDK headers, events sent through HTTP, a real webhook
receiver, fast retries, exposure events, moved experiment start times, crafted §6 results."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class Receiver:
    """A threaded HTTP server on 127.0.0.1 that verifies Standard Webhooks signatures with the
    ``standardwebhooks`` reference package, and answers from a script of status codes."""

    def __init__(self) -> None:
        self.secret: str | None = None
        self.verified: list[dict[str, Any]] = []
        self.rejected: list[str] = []
        self.attempts: list[dict[str, str]] = []
        self.script: list[int] = []  # statuses to answer first (then 204)
        self.delay = 0.0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver.lock:
                    receiver.attempts.append(headers)
                    status = receiver.script.pop(0) if receiver.script else 204
                    if status == 204:
                        try:
                            assert receiver.secret is not None
                            payload = Webhook(receiver.secret).verify(body, headers)
                            receiver.verified.append({"headers": headers, "payload": payload})
                        except WebhookVerificationError as exc:
                            receiver.rejected.append(str(exc))
                            status = 400
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate():
                    return
            time.sleep(0.02)
        raise AssertionError("timed out waiting for the webhook receiver")


@pytest.fixture
def allow_private_webhooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """TRIALBOOK_WEBHOOK_ALLOW_PRIVATE set: the receivers listen on 127.0.0.1."""
    from service.config import get_settings

    monkeypatch.setenv("TRIALBOOK_WEBHOOK_ALLOW_PRIVATE", "1")
    get_settings.cache_clear()
    yield
    monkeypatch.delenv("TRIALBOOK_WEBHOOK_ALLOW_PRIVATE", raising=False)
    get_settings.cache_clear()


@pytest.fixture
def receiver(allow_private_webhooks: None) -> Iterator[Receiver]:
    """A receiver on 127.0.0.1, with private webhook addresses allowed."""
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()
    r.thread.join(5)


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry after ~0.1 s instead of the production schedule, three retries in all."""
    from service.webhooks import service

    monkeypatch.setattr(service, "RETRY_SCHEDULE_SECONDS", (0.1, 0.1, 0.1))


@pytest.fixture
def sdk(keys: dict[str, dict[str, str]]) -> dict[str, str]:
    return keys["sdk"]


@pytest.fixture
def ingest(client: Any, keys: dict[str, dict[str, str]]) -> Any:
    """POST events to /v1/events in batches; every event must be accepted."""

    def send(events: list[dict[str, Any]]) -> None:
        for start in range(0, len(events), 5000):
            batch = events[start : start + 5000]
            r = client.post("/v1/events", json={"events": batch}, headers=keys["sdk"])
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["rejected"] == [], body["rejected"][:3]
            assert body["accepted"] + body["duplicates"] == len(batch)

    return send


@pytest.fixture
def exposures() -> Callable[..., list[dict[str, Any]]]:
    """Exposure events: ``exposures("exp", {"control": 600, "treatment": 400})``."""

    def make(experiment: str, counts: dict[str, int], prefix: str = "u") -> list[dict[str, Any]]:
        ts = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
        out = []
        for variant, n in counts.items():
            for i in range(n):
                out.append(
                    {
                        "event_id": str(uuid.uuid4()),
                        "type": "exposure",
                        "experiment": experiment,
                        "variant": variant,
                        "unit_id": f"{prefix}-{variant}-{i}",
                        "timestamp": ts,
                    }
                )
        return out

    return make


@pytest.fixture
def set_times(engine: Any) -> Callable[..., None]:
    """Move an experiment's start (and its current phase's start) into the past."""

    def move(key: str, started_ago: timedelta) -> None:
        from sqlmodel import select

        from service.db import open_session
        from service.experiments.models import Experiment, ExperimentPhase

        with open_session(write=True) as session:
            exp = session.exec(select(Experiment).where(Experiment.key == key)).one()
            when = datetime.now(UTC) - started_ago
            exp.started_at = when
            session.add(exp)
            for phase in session.exec(
                select(ExperimentPhase).where(ExperimentPhase.experiment_id == exp.id)
            ).all():
                phase.started_at = when
                session.add(phase)
            session.commit()

    return move


# ------------------------------------------------------------------------- crafted §6 results

_NO_ESTIMATE = {"estimate": None, "ci_low": None, "ci_high": None, "p_value": None}
_RESULTS_DEFAULTS: dict[str, Any] = {
    "experiment": "crafted",
    "phase": 1,
    "status": "running",
    "computed_at": "2026-03-02T00:00:00Z",
    "method": "fixed",
    "alpha": 0.05,
    "correction": "holm",
    "multiple_exposures": 0,
    "overridden_units": 0,
    "units": 0,
    "metrics": [],
    "warnings": [],
}
_PART_DEFAULTS: dict[str, dict[str, Any]] = {
    "srm": {"p_value": None, "mismatch": False, "observed": {}, "expected": {}, "threshold": 0.001},
    "power": {"sample_size_per_variant": None, "units_so_far": 0, "units_per_variant": {}},
    "decision": {"recommendation": "keep_running", "reasons": []},
}
_METRIC_DEFAULTS: dict[str, Any] = {
    "type": "binomial",
    "name": "crafted",
    "higher_is_better": True,
    "winsorized": False,
    "variants": [],
    "comparisons": [],
}
_COMPARISON_DEFAULTS: dict[str, Any] = {
    "control": "control",
    "absolute": _NO_ESTIMATE,
    "relative": _NO_ESTIMATE,
    "significant": False,
    "p_value_adjusted": None,
    "warnings": [],
}


def crafted_results(partial: dict[str, Any]) -> Any:
    """A ``ResultsPublic`` with the fields of ``partial`` (a §6 results object holding only what a
    test is about), the other required fields neutral: no mismatch, no progress, keep running."""
    from service.analysis.models import ResultsPublic

    body = _RESULTS_DEFAULTS | {
        k: (_PART_DEFAULTS[k] | ({"progress": None} if k == "power" else {}) | partial.get(k, {}))
        for k in _PART_DEFAULTS
    }
    body |= {k: v for k, v in partial.items() if k not in _PART_DEFAULTS}
    body["metrics"] = [
        _METRIC_DEFAULTS
        | metric
        | {
            "comparisons": [
                _COMPARISON_DEFAULTS | {k: v for k, v in comp.items() if v is not None}
                for comp in metric.get("comparisons", [])
            ]
        }
        for metric in partial.get("metrics", [])
    ]
    for metric in body["metrics"]:
        for comp in metric["comparisons"]:
            for part in ("absolute", "relative"):
                comp[part] = _NO_ESTIMATE | comp[part]
    return ResultsPublic.model_validate(body)


@pytest.fixture
def results_public() -> Callable[[dict[str, Any]], Any]:
    """:func:`crafted_results`: the alerts and insights rules take ``ResultsPublic``."""
    return crafted_results
