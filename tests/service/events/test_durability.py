"""Ingestion against a real uvicorn server: kill -9 mid-stream, and several workers at once."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow


def send(client: httpx.Client, sdk: dict[str, str], batch: list[dict[str, Any]]) -> Any:
    """POST one batch; the response, or None when the connection failed."""
    try:
        return client.post("/v1/events", json={"events": batch}, headers=sdk, timeout=60)
    except httpx.TransportError:
        return None


def test_a_crash_loses_no_acknowledged_event_and_a_resend_stores_none_twice(
    server, sdk, running, events, stored_ids, count
):
    batches = [events.mixed(500, prefix=f"b{i}-") for i in range(40)]
    acked: list[bool] = [False] * len(batches)
    srv = server(1)
    srv.start()

    def stream() -> None:
        with httpx.Client(base_url=srv.url) as client:
            for i, batch in enumerate(batches):
                r = send(client, sdk, batch)
                acked[i] = r is not None and r.status_code == 200

    sender = threading.Thread(target=stream)
    sender.start()
    deadline = time.monotonic() + 60
    while sum(acked) < 8 and time.monotonic() < deadline:
        time.sleep(0.005)
    srv.kill()  # kill -9, most likely in the middle of a batch
    sender.join(timeout=120)
    first_acked = [i for i, ok in enumerate(acked) if ok]
    assert 8 <= len(first_acked) < len(batches), "the crash did not happen mid-stream"

    stored_after_crash = set(stored_ids())
    for i in first_acked:  # a 2xx means committed
        assert {e["event_id"] for e in batches[i]} <= stored_after_crash

    srv.start()
    with httpx.Client(base_url=srv.url) as client:
        for i, batch in enumerate(batches):
            if acked[i]:
                continue
            r = send(client, sdk, batch)
            assert r is not None and r.status_code == 200, r and r.text
            answer = r.json()
            assert answer["accepted"] + answer["duplicates"] == len(batch)
            assert answer["conflicts"] == 0 and answer["rejected"] == []
    ids = stored_ids()
    sent = {e["event_id"] for batch in batches for e in batch}
    assert len(ids) == len(set(ids)) == len(sent) == 40 * 500
    assert set(ids) == sent
    assert count("exposure_unit") == 40 * 250


def test_two_workers_and_eight_clients_never_lock_or_fail(
    server, sdk, running, events, stored_ids, count
):
    srv = server(2)
    srv.start()
    batches = [events.mixed(300, prefix=f"c{i}-") for i in range(32)]
    # Every batch is sent by two clients, so identical rows race for the same unique keys.
    plan = [[batches[(c * 4 + k) % 32] for k in range(8)] for c in range(8)]
    statuses: list[int] = []
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()

    def client_loop(mine: list[list[dict[str, Any]]]) -> None:
        with httpx.Client(base_url=srv.url) as client:
            for batch in mine:
                r = send(client, sdk, batch)
                with lock:
                    statuses.append(r.status_code if r is not None else -1)
                    if r is not None and r.status_code == 200:
                        answers.append(r.json())

    threads = [threading.Thread(target=client_loop, args=(p,)) for p in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    srv.stop()
    assert statuses == [200] * 64
    assert sum(a["accepted"] for a in answers) == 32 * 300
    assert sum(a["duplicates"] for a in answers) == 32 * 300
    assert sum(a["conflicts"] for a in answers) == 0
    assert len(stored_ids()) == 32 * 300
    assert count("exposure_unit") == 32 * 150
    log = srv.log.read_text()
    assert "locked" not in log and "Traceback" not in log, log
