"""Delivery governed by time, drops counted and reported, and the on-disk spool (mock transport).

The waits between retries go through the client's ``sleep`` hook, which records them instead of
sleeping; the time they add up to counts as elapsed for ``RetryPolicy.max_retry_seconds``, so an
outage of minutes runs in milliseconds. The fake server below answers according to that virtual
clock. The spool is a real SQLite file under ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from numpy.testing import assert_allclose
from sdk_helpers import BASE_CONFIG
from trialbook import (
    Client,
    ClientStats,
    DropReason,
    DropStats,
    RetryPolicy,
    TransportError,
)
from trialbook.testing import MockTransport, Request, Response

URL = "http://trialbook.test"


class OutageServer:
    """A fake server that is down (503, or no answer) while ``down()`` says so.

    ``clock`` is the virtual time: the sum of the waits the client asked for.
    """

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.lock = threading.Lock()
        self.down: Callable[[float], bool] = lambda now: False
        self.refuse_network = False
        self.events_handler: Callable[[list[dict[str, Any]]], Response] | None = None
        self.delivered: list[dict[str, Any]] = []
        self.posts = 0

    @property
    def clock(self) -> float:
        return sum(self.sleeps)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def __call__(self, request: Request) -> Response:
        if request.method == "GET":
            return Response(200, {"etag": '"v1"'}, json.dumps(BASE_CONFIG).encode())
        assert request.body is not None
        events = json.loads(request.body)["events"]
        with self.lock:
            self.posts += 1
        if self.down(self.clock):
            if self.refuse_network:
                raise TransportError("connection refused")
            return Response(503)
        if self.events_handler is not None:
            response = self.events_handler(events)
            if not 200 <= response.status < 300:
                return response
        else:
            body = {"accepted": len(events), "duplicates": 0, "conflicts": 0, "rejected": []}
            response = Response(200, {}, json.dumps(body).encode())
        with self.lock:
            self.delivered.extend(events)
        return response


@pytest.fixture
def outage() -> OutageServer:
    return OutageServer()


@pytest.fixture
def make_client(outage: OutageServer) -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def build(**kwargs: Any) -> Client:
        options: dict[str, Any] = {
            "transport": MockTransport(outage),
            "flush_interval": 0.05,
            "refresh_interval": 3600,
            "sleep": outage.sleep,
            "config": BASE_CONFIG,
        }
        options.update(kwargs)
        client = Client(URL, "sdk-key", **options)
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close(timeout=2)


class Drops:
    """An ``on_drop`` that records what it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[DropReason, list[dict[str, Any]]]] = []
        self.lock = threading.Lock()

    def __call__(self, events: list[dict[str, Any]], reason: DropReason) -> None:
        with self.lock:
            self.calls.append((reason, events))

    def by_reason(self) -> dict[DropReason, list[dict[str, Any]]]:
        out: dict[DropReason, list[dict[str, Any]]] = {}
        for reason, events in self.calls:
            out.setdefault(reason, []).extend(events)
        return out


# ---------------------------------------------------------------------- retries governed by time


@pytest.mark.parametrize("refuse_network", [False, True], ids=["503", "network_error"])
def test_an_11_second_server_restart_loses_no_event_with_the_default_policy(
    make_client: Callable[..., Client], outage: OutageServer, refuse_network: bool
) -> None:
    """The issue-12 case: six attempts with 0.5 s backoff gave up after at most 7.75 s."""
    outage.down = lambda now: now < 11.0
    outage.refuse_network = refuse_network
    client = make_client()
    for i in range(60):
        client.track("purchase", f"u{i}")
    assert client.flush(5)
    stats = client.stats()
    assert sorted(e["unit_id"] for e in outage.delivered) == sorted(f"u{i}" for i in range(60))
    assert stats.dropped == DropStats() and stats.dropped.total == 0
    assert stats.retries >= 1 and stats.accepted == 60
    assert outage.clock >= 11.0


def test_retries_use_jittered_exponential_backoff_capped_at_30_seconds(
    make_client: Callable[..., Client], outage: OutageServer
) -> None:
    outage.down = lambda now: now < 400.0
    client = make_client()
    client.track("purchase", "u1")
    assert client.flush(5)
    sleeps = outage.sleeps
    assert len(outage.delivered) == 1 and client.stats().dropped.total == 0
    assert max(sleeps) <= 30.0
    # attempt k waits within [0, min(30, 0.5 * 2**(k-1))]
    assert all(0 <= s <= min(30.0, 0.5 * 2**k) for k, s in enumerate(sleeps))
    capped = sleeps[7:]  # from the 8th wait on, the ceiling is 30 s: full jitter in [0, 30]
    assert len(capped) >= 10
    assert len(set(capped)) == len(capped)  # jittered: no two waits alike
    assert max(capped) > 15.0  # P(all of >= 10 uniform[0, 30] draws below 15) < 0.1 %


def test_a_batch_is_dropped_and_reported_once_max_retry_seconds_have_passed(
    make_client: Callable[..., Client], outage: OutageServer
) -> None:
    outage.down = lambda now: True
    drops = Drops()
    client = make_client(on_drop=drops)
    client.track("purchase", "u1")
    client.track("purchase", "u2", value=2.5)
    assert client.flush(5)
    # The default budget is 10 minutes; the last attempt comes at the deadline.
    assert_allclose(outage.clock, 600.0, atol=1.0)
    stats = client.stats()
    assert stats.dropped.timed_out == 2 and stats.dropped.total == 2
    assert stats.requests == len(outage.sleeps) + 1
    (reason, events), *others = drops.calls
    assert reason is DropReason.TIMED_OUT and not others
    assert [(e["unit_id"], e.get("value")) for e in events] == [("u1", None), ("u2", 2.5)]
    assert all(e["type"] == "conversion" and e["event_id"] for e in events)


def test_retry_policy_refuses_values_that_cannot_govern_a_retry() -> None:
    for bad in ({"max_retry_seconds": -1}, {"backoff_base": float("nan")}, {"backoff_max": 1e999}):
        with pytest.raises(ValueError, match="RetryPolicy"):
            RetryPolicy(**bad)
    assert RetryPolicy(max_retry_seconds=float("inf")).max_retry_seconds == float("inf")
    assert RetryPolicy() == RetryPolicy(max_retry_seconds=600.0, backoff_base=0.5, backoff_max=30)


def test_the_retry_keywords_of_old_are_gone_for_one_policy() -> None:
    with pytest.raises(TypeError):
        Client(None, "k", max_attempts=6)  # type: ignore[call-arg]


# ---------------------------------------------------------------------- drops: on_drop and stats()


def test_every_kind_of_drop_is_counted_and_reported_with_its_events(
    make_client: Callable[..., Client], outage: OutageServer
) -> None:
    def verdicts(events: list[dict[str, Any]]) -> Response:
        names = {e.get("name") for e in events}
        if "huge" in names:
            return Response(413)
        if "locked" in names:
            return Response(403)
        if "gone" in names:
            return Response(410)
        bad = [{"index": i, "error": "bad"} for i, e in enumerate(events) if e["unit_id"] == "bad"]
        if "strict" in names and bad:
            return Response(422, {}, json.dumps({"errors": bad}).encode())
        body = {"accepted": len(events) - len(bad), "rejected": bad}
        return Response(200, {}, json.dumps(body).encode())

    outage.events_handler = verdicts
    drops = Drops()
    client = make_client(on_drop=drops, flush_interval=3600, max_queue_size=3)
    for name, unit in [("q", "old1"), ("q", "old2"), ("q", "ok")]:
        client.track(name, unit)
    client.track("q", "new")  # the queue holds 3: "old1" makes room
    client.track("x", "u", value=float("nan"))
    client.track("x", "u", timestamp="yesterday")  # type: ignore[arg-type]
    assert client.flush(5)
    for name, unit in [("huge", "u"), ("locked", "u"), ("gone", "u"), ("strict", "bad")]:
        client.track(name, unit)
        assert client.flush(5)
    client.track("lenient", "bad")  # rejected inside a 2xx
    assert client.flush(5)

    stats = client.stats()
    assert stats.dropped == DropStats(
        queue_full=1, too_large=1, unauthorized=1, rejected=3, invalid=2
    )
    assert stats.dropped.total == 8 and stats.rejected == 1
    seen = drops.by_reason()
    assert [e["unit_id"] for e in seen[DropReason.QUEUE_FULL]] == ["old1"]
    assert [e["name"] for e in seen[DropReason.TOO_LARGE]] == ["huge"]
    assert [e["name"] for e in seen[DropReason.UNAUTHORIZED]] == ["locked"]
    assert sorted(e["name"] for e in seen[DropReason.REJECTED]) == ["gone", "lenient", "strict"]
    invalid = seen[DropReason.INVALID]
    assert [(e["name"], e["unit_id"]) for e in invalid] == [("x", "u"), ("x", "u")]
    assert {str(e.get("value")) for e in invalid} == {"nan", "None"}
    assert {(e["name"], e["unit_id"]) for e in outage.delivered} == {
        ("q", "old2"),
        ("q", "ok"),
        ("q", "new"),
        ("lenient", "bad"),
    }
    assert isinstance(stats, ClientStats)


def test_an_on_drop_that_raises_does_not_break_delivery(
    make_client: Callable[..., Client], outage: OutageServer
) -> None:
    calls: list[DropReason] = []

    def broken(events: list[dict[str, Any]], reason: DropReason) -> None:
        calls.append(reason)
        raise RuntimeError("the application's callback is broken")

    outage.events_handler = lambda events: (
        (Response(401) if events[0]["name"] == "refused" else None)
        or Response(200, {}, json.dumps({"accepted": len(events)}).encode())
    )
    client = make_client(on_drop=broken, batch_size=1, flush_interval=3600)
    client.track("refused", "u1")
    assert client.flush(5)
    client.track("purchase", "u2")
    assert client.flush(5)
    assert calls == [DropReason.UNAUTHORIZED]
    assert [e["unit_id"] for e in outage.delivered] == ["u2"]
    assert client.stats().dropped == DropStats(unauthorized=1)


def test_an_event_that_cannot_be_serialized_is_dropped_and_the_sender_goes_on(
    make_client: Callable[..., Client], outage: OutageServer
) -> None:
    """Regression: ``track(..., timestamp=1e20)`` made the sender thread die on serialization,
    with the whole batch, and no later event was ever sent."""
    client = make_client(flush_interval=3600)
    client.track("purchase", "u1", timestamp=1e20)  # finite, but no calendar date
    client.track("purchase", "u2")
    assert client.flush(5)
    client.track("purchase", "u3")
    assert client.flush(5)
    assert [e["unit_id"] for e in outage.delivered] == ["u2", "u3"]
    assert client.stats().dropped == DropStats(invalid=1)


def test_close_without_a_spool_drops_what_is_left_as_closed_and_reports_it(
    make_client: Callable[..., Client], outage: OutageServer
) -> None:
    outage.down = lambda now: True
    drops = Drops()
    client = make_client(on_drop=drops, sleep=None, retry=RetryPolicy(backoff_base=10))
    for i in range(3):
        client.track("purchase", f"u{i}")
    assert client.close(timeout=0.3) is False
    assert client.stats().dropped == DropStats(closed=3)
    assert sorted(e["unit_id"] for e in drops.by_reason()[DropReason.CLOSED]) == ["u0", "u1", "u2"]


# ---------------------------------------------------------------------- the spool


def spool_rows(directory: Path) -> list[str]:
    """Event ids stored in every spool file of ``directory`` (read with sqlite3)."""
    ids: list[str] = []
    for db in sorted(directory.glob("spool-*.sqlite3")):
        conn = sqlite3.connect(db)
        try:
            ids += [json.loads(b)["event_id"] for (b,) in conn.execute("SELECT body FROM event")]
        finally:
            conn.close()
    return ids


def test_spooled_events_leave_the_disk_only_once_acknowledged(
    make_client: Callable[..., Client], outage: OutageServer, tmp_path: Path
) -> None:
    down = threading.Event()
    down.set()
    outage.down = lambda now: down.is_set()
    client = make_client(spool_dir=tmp_path, sleep=None, retry=RetryPolicy(backoff_max=0.05))
    for i in range(5):
        client.track("purchase", f"u{i}")
    assert not client.flush(0.5)  # the server is down
    assert client.stats().spooled == 5 and client.stats().queued == 0
    on_disk = spool_rows(tmp_path)
    assert len(on_disk) == 5
    down.clear()
    assert client.flush(5)
    assert client.stats().spooled == 0 and spool_rows(tmp_path) == []
    assert [e["event_id"] for e in outage.delivered] == on_disk  # oldest first, ids kept
    assert client.close()
    assert list(tmp_path.glob("spool-*")) == []  # an empty spool leaves no file behind


def test_a_closed_client_keeps_its_unsent_events_for_the_next_process(
    make_client: Callable[..., Client], outage: OutageServer, tmp_path: Path
) -> None:
    outage.down = lambda now: True
    drops = Drops()
    first = make_client(
        spool_dir=tmp_path, sleep=None, on_drop=drops, retry=RetryPolicy(backoff_max=0.05)
    )
    for i in range(7):
        first.track("purchase", f"u{i}")
    assert first.close(timeout=0.5) is False
    assert first.stats().dropped.total == 0 and drops.calls == []
    kept = spool_rows(tmp_path)
    assert len(kept) == 7

    outage.down = lambda now: False
    second = make_client(spool_dir=tmp_path)
    assert second.flush(5)
    stats = second.stats()
    assert stats.spool_recovered == 7 and stats.spooled == 0 and stats.accepted == 7
    assert sorted(e["event_id"] for e in outage.delivered) == sorted(kept)
    assert spool_rows(tmp_path) == []


def test_the_spool_is_bounded_and_counts_what_does_not_fit(
    make_client: Callable[..., Client], outage: OutageServer, tmp_path: Path
) -> None:
    outage.down = lambda now: True
    drops = Drops()
    client = make_client(
        spool_dir=tmp_path,
        spool_max_events=5,
        on_drop=drops,
        sleep=None,
        flush_interval=3600,
        retry=RetryPolicy(backoff_max=0.05),
    )
    for i in range(8):
        client.track("purchase", f"u{i}")
    assert not client.flush(0.5)
    stats = client.stats()
    assert stats.spooled == 5 and stats.dropped == DropStats(spool_full=3)
    assert [e["unit_id"] for e in drops.by_reason()[DropReason.SPOOL_FULL]] == ["u5", "u6", "u7"]


def test_two_live_clients_share_a_spool_dir_without_taking_each_others_events(
    make_client: Callable[..., Client], outage: OutageServer, tmp_path: Path
) -> None:
    down = threading.Event()
    down.set()
    outage.down = lambda now: down.is_set()
    policy = RetryPolicy(backoff_max=0.05)
    a = make_client(spool_dir=tmp_path, sleep=None, retry=policy)
    a.track("purchase", "a1")
    assert not a.flush(0.3)
    b = make_client(spool_dir=tmp_path, sleep=None, retry=policy)
    b.track("purchase", "b1")
    assert not b.flush(0.3)
    assert (a.stats().spooled, b.stats().spooled, b.stats().spool_recovered) == (1, 1, 0)
    assert len(list(tmp_path.glob("spool-*.sqlite3"))) == 2
    down.clear()
    assert a.flush(5) and b.flush(5)
    assert sorted(e["unit_id"] for e in outage.delivered) == ["a1", "b1"]


def test_an_unusable_spool_dir_falls_back_to_memory(
    make_client: Callable[..., Client], outage: OutageServer, tmp_path: Path
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    client = make_client(spool_dir=not_a_dir)
    client.track("purchase", "u1")
    assert client.flush(5)
    assert [e["unit_id"] for e in outage.delivered] == ["u1"]


def _spooling_client(outage: OutageServer, spool_dir: Path) -> Client:
    """A client with a spool that sends only on flush (as the fork tests need)."""
    return Client(
        URL,
        "k",
        transport=MockTransport(outage),
        config=BASE_CONFIG,
        flush_interval=3600,
        spool_dir=spool_dir,
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_after_fork_the_child_spools_and_sends_only_its_own_events(
    outage: OutageServer, tmp_path: Path
) -> None:
    client = _spooling_client(outage, tmp_path)
    for i in range(5):
        client.track("parent", f"u{i}")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            client.track("child", "c1")
            flushed = client.flush(5)
            names = [e["name"] for e in outage.delivered]
            spooled = client.stats().spooled
            closed = client.close(5)  # as a worker's exit handler does
            os.write(write_fd, json.dumps([flushed, names, spooled, closed]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        child_report = json.loads(pipe.read())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_report == [True, ["child"], 0, True]
    assert client.flush(5)
    assert [e["name"] for e in outage.delivered] == ["parent"] * 5
    assert client.close()
    assert list(tmp_path.glob("spool-*")) == []


def _stale_spool(directory: Path, rows: int) -> None:
    """A spool file left by a client that is gone (no lock held): the next client adopts it."""
    conn = sqlite3.connect(directory / "spool-1-deadbeef.sqlite3")
    conn.execute("CREATE TABLE event (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL)")
    body = json.dumps({"type": "conversion", "name": "old", "unit_id": "u", "event_id": "0" * 32})
    conn.executemany("INSERT INTO event (body) VALUES (?)", [(body,)] * rows)
    conn.commit()
    conn.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_fork_while_the_sender_is_inside_sqlite_leaves_the_child_a_working_spool(
    outage: OutageServer, tmp_path: Path
) -> None:
    """Regression (CI flake of the test above): a fork() while the parent's sender thread was
    inside a SQLite call gave the child SQLite's process-wide mutexes held by a thread that does
    not exist there. The child's own spool never opened and its flush timed out: 9 of 20 forks
    during an adoption before the fix. Here the parent adopts a large stale spool while it forks.

    The sizes: adopting 300,000 rows took 0.66 s on the 2-core dev machine, so the 8 forks 10 ms
    apart (about 0.1 s) all fall inside the copy when the fork does not wait; 1 MiB of
    write-ahead log is past the few KiB its schema writes, so the copy of rows has begun."""
    rows, forks = 300_000, 8
    _stale_spool(tmp_path, rows=rows)
    client = _spooling_client(outage, tmp_path)
    # Fork once the parent's copy of the stale rows is under way (its write-ahead log grows):
    # the stale file's lock is then the parent's, so no child adopts those rows itself.
    deadline = time.monotonic() + 30
    while not any(
        wal.stat().st_size > 1 << 20
        for wal in tmp_path.glob(f"spool-{os.getpid()}-*.sqlite3-wal")
        if wal.exists()
    ):
        assert time.monotonic() < deadline, "the parent never started adopting"
        time.sleep(0.001)
    children: list[tuple[int, int]] = []
    for _ in range(forks):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                os.close(read_fd)
                client.track("child", "c1")
                flushed = client.flush(5)
                names = [e["name"] for e in outage.delivered]
                os.write(write_fd, json.dumps([flushed, names]).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_fd)
        children.append((pid, read_fd))
        time.sleep(0.01)
    reports = []
    for pid, read_fd in children:
        with os.fdopen(read_fd) as pipe:
            reports.append(json.loads(pipe.read()))
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    assert reports == [[True, ["child"]]] * forks
    while client.stats().spool_recovered != rows:
        assert time.monotonic() < deadline, client.stats()
        time.sleep(0.01)
    client.close(0.1)  # the parent's adopted rows stay on disk; nothing to send here
