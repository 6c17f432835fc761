"""The server killed (SIGKILL) and restarted while the SDK sends: nothing acknowledged is lost,
nothing is stored twice, and after ``flush()`` the server holds exactly the events the SDK made.

The server runs on its own SQLite file (see ``live_server.py``), also when the suite runs against
PostgreSQL. The event ids the SDK generated are captured by wrapping its transport
(``Client(..., transport=RecordingTransport())``): every ``POST /v1/events`` body is recorded
before it is sent, retries included, and the requests answered 2xx separately.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from live_server import CHECKOUT, Provisioned, RecordingTransport
from trialbook import Client, DropStats, RetryPolicy

pytestmark = pytest.mark.slow

N_UNITS = 4_000
CONVERSIONS_PER_UNIT = 3
CHUNK = 100  # units per production step; the steps are spread in time so the kill lands mid-stream


@pytest.mark.parametrize("moment", ["answer_lost", "any_time"])
def test_a_killed_and_restarted_server_loses_and_duplicates_nothing_the_sdk_sent(
    own_live: Provisioned, moment: str
) -> None:
    """``answer_lost``: the 5th batch is committed, then the server dies before the SDK reads the
    2xx (the transport kills it). ``any_time``: killed from outside once 4 batches are
    acknowledged, wherever the SDK is (most often in the middle of a request)."""
    srv = own_live.server
    killed = threading.Event()
    if moment == "answer_lost":
        transport = RecordingTransport(crash=srv.kill, crash_after_acks=4)
    else:
        transport = RecordingTransport()
    client = Client(
        srv.url,
        own_live.sdk_key,
        transport=transport,
        batch_size=250,
        flush_interval=0.05,
        refresh_interval=600,
        timeout=30,  # a dead server refuses at once; a slow one (loaded CI) must not time out
        retry=RetryPolicy(max_retry_seconds=120, backoff_base=0.1, backoff_max=0.5),
    )
    try:
        assert client.wait_until_ready(15), "the SDK never got its config"
        in_experiment: dict[str, str] = {}
        produced = threading.Event()
        producer_errors: list[BaseException] = []
        produced_after_kill = 0

        def produce() -> None:
            try:
                produce_all()
            except BaseException as exc:  # reported by the main thread
                producer_errors.append(exc)

        def produce_all() -> None:
            nonlocal produced_after_kill
            for start in range(0, N_UNITS, CHUNK):
                if start == N_UNITS // 2:
                    killed.wait(60)  # the second half is produced while the server is down
                for i in range(start, start + CHUNK):
                    u = f"crash-{i:05d}"
                    a = client.assign(CHECKOUT, u, {"country": "FR"})
                    if a.in_experiment:
                        in_experiment[u] = str(a.variant)
                    for k in range(CONVERSIONS_PER_UNIT):
                        client.track("purchase", u, value=float(k))
                    if killed.is_set():
                        produced_after_kill += 1
                time.sleep(0.02)
            produced.set()

        producer = threading.Thread(target=produce, name="e2e-producer")
        producer.start()
        if moment == "answer_lost":
            assert transport.crashed.wait(60), (client.stats(), transport.statuses, srv.log_tail())
            assert transport.lost is not None
        else:
            deadline = time.monotonic() + 60
            while len(transport.acknowledged) < 4 and time.monotonic() < deadline:
                time.sleep(0.002)
            assert len(transport.acknowledged) >= 4, (client.stats(), srv.log_tail())
            srv.kill()
        killed.set()
        lost = set(transport.lost or [])
        stored_while_down = {
            r[0]
            for r in srv.query(
                "SELECT event_id FROM exposure UNION ALL SELECT event_id FROM conversion"
            )
        }
        # A 2xx means committed: every acknowledged event survived the kill -9, and so did the
        # batch whose answer was lost.
        assert transport.acknowledged_ids() | lost <= stored_while_down
        time.sleep(1.0)  # down long enough for requests to fail and be retried
        failures_while_down = transport.failures - (1 if lost else 0)
        srv.start()
        producer.join(timeout=120)
        assert produced.is_set(), f"the producer did not finish: {producer_errors}"
        assert client.flush(timeout=120), (client.stats(), srv.log_tail())
        stats = client.stats()
    finally:
        killed.set()  # on a failure above, let the producer run out instead of waiting
        client.close(timeout=30)

    assert produced_after_kill > 0, "the kill came after the production ended"
    assert failures_while_down >= 1, "no request failed: the server was not down while sending"
    n_events = len(in_experiment) + N_UNITS * CONVERSIONS_PER_UNIT
    assert (stats.exposures_logged, stats.conversions_tracked) == (
        len(in_experiment),
        N_UNITS * CONVERSIONS_PER_UNIT,
    )
    assert stats.dropped == DropStats(), stats
    assert stats.retries >= 1 and stats.queued == 0, stats
    # The batch the server committed just before dying, retried after the restart, comes back as
    # duplicates: never as a second row, never as a conflict.
    assert stats.accepted + stats.duplicates == n_events, stats
    if moment == "answer_lost":
        # At least the lost batch (a request that timed out on a starved machine may add some).
        assert stats.duplicates >= len(lost) > 0, stats
    assert (stats.conflicts, stats.rejected) == (0, 0), stats

    generated = transport.sent_ids()
    assert len(generated) == n_events
    stored = [
        r[0]
        for r in srv.query(
            "SELECT event_id FROM exposure UNION ALL SELECT event_id FROM conversion"
        )
    ]
    assert len(stored) == len(set(stored)) == n_events
    assert set(stored) == generated

    exp_id = srv.experiment_id(CHECKOUT)
    per_variant = srv.query(
        "SELECT variant, COUNT(*) FROM exposure_unit WHERE experiment_id = ? GROUP BY variant",
        (exp_id,),
    )
    assert dict(per_variant) == dict(Counter(in_experiment.values()))
    conversions = srv.query("SELECT value, COUNT(*) FROM conversion GROUP BY value ORDER BY value")
    assert conversions == [(float(k), N_UNITS) for k in range(CONVERSIONS_PER_UNIT)]
    log = srv.log.read_text()
    assert "Traceback" not in log, log
