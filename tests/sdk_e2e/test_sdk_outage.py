"""A real server down for a while, and a client process killed: nothing lost, nothing stored twice.

Issue 12: an 11-second server restart lost 60 events for good (six attempts with 0.5 s backoff
gave up after 5.5 s). Here the server (``python -m service.cli serve`` on its own SQLite file, see
``live_server.py``) is stopped while the SDK produces events, then restarted on the same port and
database; the stored rows are counted straight from the database file.

The process-restart tests run the SDK in a child Python process with a ``spool_dir``, kill it
(SIGKILL) before its events are delivered, and let a second process with the same ``spool_dir``
deliver them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from live_server import CHECKOUT, Provisioned, RecordingTransport
from trialbook import Client, DropStats, RetryPolicy

REPO = Path(__file__).resolve().parents[2]


def stored_ids(live: Provisioned) -> list[str]:
    return [
        r[0]
        for r in live.server.query(
            "SELECT event_id FROM exposure UNION ALL SELECT event_id FROM conversion"
        )
    ]


def ride_out_an_outage(live: Provisioned, outage_seconds: float, retry: RetryPolicy) -> None:
    """Produce events before, during and after an outage; every one is stored exactly once."""
    srv = live.server
    transport = RecordingTransport()
    client = Client(
        srv.url,
        live.sdk_key,
        transport=transport,
        retry=retry,
        batch_size=200,
        flush_interval=0.1,
        refresh_interval=600,
        timeout=30,  # a slow answer on a loaded machine must not turn into a retry
    )
    exposed = 0
    tracked = 0
    try:
        assert client.wait_until_ready(15), "the SDK never got its config"

        def produce(prefix: str, n: int) -> None:
            nonlocal exposed, tracked
            for i in range(n):
                unit = f"{prefix}-{i:04d}"
                exposed += client.assign(CHECKOUT, unit, {"country": "FR"}).in_experiment
                client.track("purchase", unit, value=float(i % 7))
                tracked += 1

        produce("before", 300)
        assert client.flush(60), client.stats()
        srv.stop()
        down_at = time.monotonic()
        # Events made during the outage, spread over it so batches fail at different moments.
        steps = 10
        for step in range(steps):
            produce(f"during{step}", 30)
            time.sleep(outage_seconds / steps)
        failures_while_down = transport.failures
        while time.monotonic() - down_at < outage_seconds:
            time.sleep(0.1)
        srv.start()
        produce("after", 300)
        # The longest wait between two attempts is 30 s (the backoff cap).
        assert client.flush(timeout=retry.backoff_max + 90), (client.stats(), srv.log_tail())
        stats = client.stats()
    finally:
        client.close(timeout=30)

    assert failures_while_down >= 2, "the SDK did not try while the server was down"
    assert stats.dropped == DropStats(), stats
    assert (stats.exposures_logged, stats.conversions_tracked) == (exposed, tracked)
    n_events = exposed + tracked
    assert stats.accepted + stats.duplicates == n_events, stats
    assert (stats.conflicts, stats.rejected, stats.queued) == (0, 0, 0), stats
    stored = stored_ids(live)
    assert len(stored) == len(set(stored)) == n_events
    assert set(stored) == transport.sent_ids()
    assert srv.query("SELECT COUNT(*) FROM conversion") == [(tracked,)]
    assert "Traceback" not in srv.log.read_text()


def test_a_server_down_for_6_seconds_loses_and_duplicates_nothing(own_live: Provisioned) -> None:
    """The short version: backoff capped at 1 s so the test waits little after the restart."""
    ride_out_an_outage(own_live, 6.0, RetryPolicy(max_retry_seconds=120, backoff_max=1.0))


@pytest.mark.slow
def test_a_server_down_for_60_seconds_loses_and_duplicates_nothing(
    own_live: Provisioned,
) -> None:
    """The issue's case, with the default policy (10 minutes, backoff capped at 30 s)."""
    ride_out_an_outage(own_live, 60.0, RetryPolicy())


# ---------------------------------------------------------------------- a process restart

_CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time
    from trialbook import Client, RetryPolicy
    from trialbook._transport import UrllibTransport

    url, key, spool_dir, n, kill_after_acks = sys.argv[1:6]
    n, kill_after_acks = int(n), int(kill_after_acks)
    all_tracked = threading.Event()

    class DieAfterAcks(UrllibTransport):
        '''Killed (SIGKILL) once the server acknowledged ``kill_after_acks`` batches and every
        event is in the spool: the last 2xx reaches this process, which dies before it deletes
        that batch from the spool.'''

        acked = 0

        def send(self, request, timeout):
            response = super().send(request, timeout)
            if request.method == "POST" and 200 <= response.status < 300:
                batch = json.loads(request.body)["events"]
                self.acked += len(batch)
                # This runs on the sender thread, which also moves the queue to the spool: an
                # empty queue here means every event made so far is on disk.
                if (
                    kill_after_acks
                    and self.acked >= kill_after_acks * len(batch)
                    and all_tracked.is_set()
                    and client.stats().queued == 0
                ):
                    print(json.dumps({"acked": self.acked, "last_batch": len(batch)}), flush=True)
                    os.kill(os.getpid(), signal.SIGKILL)
            return response

    client = Client(url, key, spool_dir=spool_dir, transport=DieAfterAcks(), batch_size=50,
                    flush_interval=3600, refresh_interval=3600,
                    retry=RetryPolicy(backoff_max=0.2))
    for i in range(n):
        client.track("purchase", f"proc-{i:04d}", value=float(i))
    all_tracked.set()
    client.flush(0.01)  # wakes the sender: the queue goes to the spool, then to the server
    if not kill_after_acks:  # the server is down: report once every event is on disk
        deadline = time.monotonic() + 60
        while client.stats().spooled < n and time.monotonic() < deadline:
            time.sleep(0.01)
        print(json.dumps({"spooled": client.stats().spooled}), flush=True)
    time.sleep(600)  # killed (SIGKILL) by the parent or by the transport before this ends
    """
)


def run_child(
    live: Provisioned, spool_dir: Path, n: int, kill_after_acks: int
) -> list[dict[str, Any]]:
    """Run the child until it is killed; return the JSON lines it printed."""
    argv = [sys.executable, "-c", _CHILD, live.server.url, live.sdk_key, str(spool_dir)]
    lines: list[dict[str, Any]] = []
    with subprocess.Popen(
        [*argv, str(n), str(kill_after_acks)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None and child.stderr is not None
            for line in child.stdout:
                lines.append(json.loads(line))
                if "spooled" in lines[-1]:
                    os.kill(child.pid, signal.SIGKILL)  # before delivery: the server is down
                    break
            code = child.wait(timeout=60)
            errors = child.stderr.read()
        finally:
            if child.poll() is None:
                child.kill()
    assert code == -signal.SIGKILL, (code, errors)
    assert "Traceback" not in errors, errors
    return lines


@pytest.mark.parametrize("moment", ["server_down", "answer_received"])
def test_a_killed_process_leaves_its_events_in_the_spool_for_the_next_one(
    own_live: Provisioned, tmp_path: Path, moment: str
) -> None:
    """``server_down``: nothing could be delivered before the kill. ``answer_received``: the
    child dies right after the server acknowledged its 3rd batch, before removing it from the
    spool, so the second process sends it again: a duplicate on the server, not a second row."""
    srv = own_live.server
    spool_dir = tmp_path / "spool"
    n = 400
    if moment == "server_down":
        srv.stop()
        lines = run_child(own_live, spool_dir, n, kill_after_acks=0)
        assert lines == [{"spooled": n}]
        srv.start()
        acked = resent = 0
    else:
        lines = run_child(own_live, spool_dir, n, kill_after_acks=3)
        assert len(lines) == 1 and "acked" in lines[0], lines
        (killed,) = lines
        acked, resent = killed["acked"], killed["last_batch"]
        assert resent == 50 and 150 <= acked < n, killed
        assert len(stored_ids(own_live)) == acked  # committed before the kill
    assert len(list(spool_dir.glob("spool-*.sqlite3"))) == 1  # left by the killed process

    with Client(
        srv.url, own_live.sdk_key, spool_dir=spool_dir, flush_interval=0.05, timeout=30
    ) as second:
        assert second.flush(60), (second.stats(), srv.log_tail())
        stats = second.stats()
    left = n - acked + resent
    assert stats.spool_recovered == left and stats.spooled == 0, stats
    assert (stats.accepted, stats.duplicates) == (left - resent, resent), stats
    assert stats.dropped == DropStats(), stats
    stored = stored_ids(own_live)
    assert len(stored) == len(set(stored)) == n
    values = srv.query("SELECT unit_id, value FROM conversion ORDER BY unit_id")
    assert values == [(f"proc-{i:04d}", float(i)) for i in range(n)]
    assert list(spool_dir.glob("spool-*")) == []  # delivered and closed: nothing left
