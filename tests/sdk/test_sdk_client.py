"""The client with a mocked transport: config refresh, delivery, retries, overflow, lifecycle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from numpy.testing import assert_allclose
from sdk_helpers import BASE_CONFIG, make_config, make_experiment
from trialbook import Client, Reason, RetryPolicy, TransportError
from trialbook._events import iso_timestamp, uuid7
from trialbook.testing import MockTransport, Request, Response

URL = "http://trialbook.test"


class FakeServer:
    """Records requests; ``events_handler(events) -> Response`` decides each POST answer."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = config if config is not None else BASE_CONFIG
        self.requests: list[Request] = []
        self.batches: list[list[dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.events_handler: Callable[[list[dict[str, Any]]], Response] = self.accept

    def accept(self, events: list[dict[str, Any]]) -> Response:
        body = {"accepted": len(events), "duplicates": 0, "conflicts": 0, "rejected": []}
        return Response(200, {}, json.dumps(body).encode())

    def __call__(self, request: Request) -> Response:
        with self.lock:
            self.requests.append(request)
        if request.method == "GET":
            if request.headers.get("If-None-Match") == '"v1"':
                return Response(304, {"etag": '"v1"'})
            return Response(200, {"etag": '"v1"'}, json.dumps(self.config).encode())
        assert request.body is not None
        events = json.loads(request.body)["events"]
        response = self.events_handler(events)
        if 200 <= response.status < 300:
            with self.lock:
                self.batches.append(events)
        return response

    @property
    def delivered(self) -> list[dict[str, Any]]:
        return [event for batch in self.batches for event in batch]


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def make_client(server: FakeServer) -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []
    sleeps: list[float] = []

    def build(**kwargs: Any) -> Client:
        options: dict[str, Any] = {
            "api_key": "sdk-key",
            "transport": MockTransport(server),
            "flush_interval": 0.05,
            "refresh_interval": 3600,
            "sleep": sleeps.append,
        }
        options.update(kwargs)
        client = Client(
            kwargs.pop("base_url", URL), **{k: v for k, v in options.items() if k != "base_url"}
        )
        client.sleeps = sleeps  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close(timeout=2)


def test_the_client_fetches_the_config_and_assigns_locally(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    client = make_client()
    assert client.wait_until_ready(2)
    result = client.assign("new-checkout", "user-1")
    assert result.reason is Reason.SPLIT
    get = server.requests[0]
    assert get.method == "GET" and get.url == URL + "/v1/sdk/config"
    assert get.headers["Authorization"] == "Bearer sdk-key"


def test_a_refresh_sends_the_etag_and_a_304_keeps_the_config(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    client = make_client()
    assert client.wait_until_ready(2)
    config = client.config
    assert client.refresh() is False
    last = [r for r in server.requests if r.method == "GET"][-1]
    assert last.headers["If-None-Match"] == '"v1"'
    assert client.config is config
    stats = client.stats()
    assert stats.config_fetches == 1 and stats.config_not_modified == 1


def test_a_bad_config_from_the_server_keeps_the_current_one(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    client = make_client()
    assert client.wait_until_ready(2)
    server.config = {"hash_version": 99, "experiments": {}}
    client._etag = None
    assert client.refresh() is False
    assert client.assign("new-checkout", "user-1").reason is Reason.SPLIT
    assert client.stats().config_errors == 1


def test_without_a_config_assign_returns_none_with_a_reason_and_never_raises() -> None:
    def down(request: Request) -> Response:
        raise TransportError("connection refused")

    with Client(URL, "k", transport=MockTransport(down), flush_interval=0.05) as client:
        result = client.assign("new-checkout", "user-1")
        assert result.variant is None and result.reason is Reason.NO_CONFIG
        assert client.assign(None, None).reason is Reason.NO_CONFIG  # type: ignore[arg-type]
        client.track(None, None, value="x")  # type: ignore[arg-type]


def test_booting_from_a_file_works_while_the_server_is_down(tmp_path: Any) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(BASE_CONFIG))

    def down(request: Request) -> Response:
        return Response(503)

    with Client(URL, "k", config_path=path, transport=MockTransport(down)) as client:
        assert client.assign("new-checkout", "qa-user-1").reason is Reason.OVERRIDE


def test_environment_variables_configure_the_client(
    monkeypatch: pytest.MonkeyPatch, server: FakeServer
) -> None:
    monkeypatch.setenv("TRIALBOOK_URL", "http://env.test/")
    monkeypatch.setenv("TRIALBOOK_SDK_KEY", "env-key")
    with Client(transport=MockTransport(server)) as client:
        assert client.wait_until_ready(2)
    assert server.requests[0].url == "http://env.test/v1/sdk/config"
    assert server.requests[0].headers["Authorization"] == "Bearer env-key"


def test_one_exposure_per_unit_variant_and_the_event_shapes(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    client = make_client()
    assert client.wait_until_ready(2)
    for _ in range(3):
        client.assign("new-checkout", "user-1")
    client.assign("new-checkout", "qa-user-1")  # override: not in the experiment, no exposure
    client.track("purchase", "user-1", value=31.5)
    client.track("signup", "user-2", timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert client.flush(2)
    exposure, purchase, signup = server.delivered
    variant = client.assign("new-checkout", "user-1").variant
    assert set(exposure) == {
        "event_id",
        "type",
        "experiment",
        "variant",
        "unit_id",
        "timestamp",
        "phase",
    }
    assert exposure["type"] == "exposure" and exposure["experiment"] == "new-checkout"
    assert (
        exposure["variant"] == variant
        and exposure["unit_id"] == "user-1"
        and exposure["phase"] == 1
    )
    assert purchase == {**purchase, "type": "conversion", "name": "purchase", "value": 31.5}
    assert signup["timestamp"] == "2026-01-02T03:04:05.000000Z" and "value" not in signup
    for event in server.delivered:
        parsed = uuid.UUID(event["event_id"])
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        stamp = datetime.fromisoformat(event["timestamp"])
        assert stamp.utcoffset() == timedelta(0)
    stats = client.stats()
    assert stats.exposures_logged == 1 and stats.exposures_deduplicated >= 2
    assert stats.conversions_tracked == 2 and stats.accepted == 3 and stats.events_sent == 3


def test_the_dedup_cache_is_bounded(make_client: Callable[..., Client]) -> None:
    client = make_client(config=BASE_CONFIG, dedup_cache_size=100, base_url=None)
    for i in range(1000):
        client.assign("new-checkout", f"u{i}")
    assert len(client._seen_new) + len(client._seen_old) <= 100
    client.assign("new-checkout", "u999")
    assert client.stats().exposures_deduplicated == 1


def test_retries_on_5xx_and_network_errors_then_delivers(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    answers = iter(["fail", 503, 408])

    def flaky(events: list[dict[str, Any]]) -> Response:
        answer = next(answers, 200)
        if answer == "fail":
            raise TransportError("reset")
        if answer != 200:
            return Response(int(str(answer)))
        return server.accept(events)

    server.events_handler = flaky
    client = make_client(retry=RetryPolicy(backoff_base=0.5, backoff_max=30))
    client.track("purchase", "u1")
    assert client.flush(2)
    assert len(server.delivered) == 1
    stats = client.stats()
    assert stats.retries == 3 and stats.requests == 4
    ids = {
        json.loads(r.body or b"{}")["events"][0]["event_id"]
        for r in server.requests
        if r.method == "POST"
    }
    assert len(ids) == 1  # the same event_id on every retry
    sleeps = client.sleeps  # type: ignore[attr-defined]
    # full-jitter exponential backoff: attempt k waits within [0, 0.5 * 2**(k-1)]
    assert len(sleeps) == 3
    assert all(0 <= s <= 0.5 * 2**k for k, s in enumerate(sleeps))


def test_retry_after_is_honoured_in_seconds_and_as_a_date(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=40), usegmt=True)
    answers = iter([Response(429, {"retry-after": "7"}), Response(503, {"retry-after": later})])

    def limited(events: list[dict[str, Any]]) -> Response:
        return next(answers, None) or server.accept(events)

    server.events_handler = limited
    client = make_client(retry=RetryPolicy(backoff_base=0.01, max_retry_seconds=120))
    client.track("purchase", "u1")
    assert client.flush(2)
    first, second = client.sleeps  # type: ignore[attr-defined]
    assert first == 7.0
    assert 38 <= second <= 40
    assert len(server.delivered) == 1


def test_retries_are_bounded_in_time_not_in_attempts(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    server.events_handler = lambda events: Response(500)
    client = make_client(retry=RetryPolicy(max_retry_seconds=20, backoff_base=0.5, backoff_max=2))
    client.track("purchase", "u1")
    client.track("purchase", "u2")
    assert client.flush(2)
    stats = client.stats()
    sleeps = client.sleeps  # type: ignore[attr-defined]
    # Many more than the six attempts of old, and the waits add up to the budget exactly: the
    # last attempt is made at the deadline.
    assert stats.requests == len(sleeps) + 1 > 10
    assert_allclose(sum(sleeps), 20, atol=0.5)
    assert stats.dropped.timed_out == 2 and stats.dropped.total == 2

    server.events_handler = lambda events: Response(429, {"retry-after": "3600"})
    client2 = make_client(retry=RetryPolicy(max_retry_seconds=60))
    client2.track("purchase", "u1")
    assert client2.flush(2)
    assert client2.stats().requests == 1 and client2.stats().dropped.timed_out == 1


def test_a_413_splits_the_batch_until_it_fits(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    def small_only(events: list[dict[str, Any]]) -> Response:
        if len(events) > 3 or any(e["name"] == "huge" for e in events):
            return Response(413)
        return server.accept(events)

    server.events_handler = small_only
    client = make_client(flush_interval=3600, batch_size=1000)
    for i in range(20):
        client.track("purchase", f"u{i}")
    client.track("huge", "u0")
    assert client.flush(2)
    assert sorted(e["unit_id"] for e in server.delivered) == sorted(f"u{i}" for i in range(20))
    assert all(len(b) <= 3 for b in server.batches)
    assert client.stats().dropped.too_large == 1


def test_rejected_events_are_dropped_not_retried(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    def reject_first(events: list[dict[str, Any]]) -> Response:
        body = {
            "accepted": len(events) - 1,
            "duplicates": 0,
            "conflicts": 0,
            "rejected": [{"index": 0, "error": "unknown experiment"}],
        }
        return Response(200, {}, json.dumps(body).encode())

    server.events_handler = reject_first
    client = make_client()
    client.track("purchase", "u1")
    client.track("purchase", "u2")
    assert client.flush(2)
    stats = client.stats()
    assert stats.requests == 1 and stats.rejected == 1 and stats.accepted == 1


def test_a_validation_answer_drops_the_named_events_and_resends_the_rest(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    def strict(events: list[dict[str, Any]]) -> Response:
        bad = [{"index": i, "error": "bad"} for i, e in enumerate(events) if e["unit_id"] == "bad"]
        if bad:
            return Response(422, {}, json.dumps({"errors": bad}).encode())
        return server.accept(events)

    server.events_handler = strict
    client = make_client(flush_interval=3600)
    for unit in ("u1", "bad", "u2", "bad"):
        client.track("purchase", unit)
    assert client.flush(2)
    assert [e["unit_id"] for e in server.delivered] == ["u1", "u2"]
    assert client.stats().dropped.rejected == 2


def test_401_drops_without_retrying(make_client: Callable[..., Client], server: FakeServer) -> None:
    server.events_handler = lambda events: Response(401)
    client = make_client()
    client.track("purchase", "u1")
    assert client.flush(2)
    assert client.stats().requests == 1 and client.stats().dropped.unauthorized == 1


def test_a_full_queue_drops_the_oldest_and_counts(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    client = make_client(flush_interval=3600, max_queue_size=10, batch_size=1000)
    for i in range(25):
        client.track("purchase", f"u{i}")
    assert client.stats().dropped.queue_full == 15 and client.stats().queued == 10
    assert client.flush(2)
    assert [e["unit_id"] for e in server.delivered] == [f"u{i}" for i in range(15, 25)]


def test_a_full_batch_is_sent_before_the_interval(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    client = make_client(flush_interval=3600, batch_size=5)
    for i in range(5):
        client.track("purchase", f"u{i}")
    deadline = time.monotonic() + 2
    while len(server.delivered) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(server.delivered) == 5


def test_close_flushes_and_the_context_manager_closes(server: FakeServer) -> None:
    with Client(URL, "k", transport=MockTransport(server), flush_interval=3600) as client:
        client.track("purchase", "u1")
    assert len(server.delivered) == 1
    assert client.close() is True  # idempotent
    assert client.assign("new-checkout", "u1").reason is Reason.SPLIT  # still answers


def test_close_gives_up_after_its_timeout(server: FakeServer) -> None:
    server.events_handler = lambda events: Response(503)
    client = Client(
        URL,
        "k",
        transport=MockTransport(server),
        retry=RetryPolicy(backoff_base=10, backoff_max=10),
    )
    client.track("purchase", "u1")
    started = time.monotonic()
    assert client.close(timeout=0.3) is False
    assert time.monotonic() - started < 5
    assert client.stats().dropped.closed == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_after_fork_the_child_sends_only_its_own_events(server: FakeServer) -> None:
    client = Client(URL, "k", transport=MockTransport(server), flush_interval=3600)
    for i in range(5):
        client.track("parent", f"u{i}")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            queued_after_fork = client.stats().queued
            client.track("child", "c1")
            flushed = client.flush(2)
            names = [e["name"] for e in server.delivered]
            os.write(write_fd, json.dumps([queued_after_fork, flushed, names]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        child_report = json.loads(pipe.read())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_report == [0, True, ["child"]]
    assert client.flush(2)
    assert [e["name"] for e in server.delivered] == ["parent"] * 5
    client.close()


_ATEXIT_CHILD = """
import json, sys
from trialbook import Client
from trialbook.testing import MockTransport, Response
out = open(sys.argv[1], "a")
def handler(request):
    if request.method == "POST":
        out.write(request.body.decode() + "\\n"); out.flush()
        return Response(200, {}, b'{"accepted": 3}')
    return Response(503)
client = Client("http://x.test", "k", transport=MockTransport(handler), flush_interval=3600)
for i in range(3):
    client.track("purchase", f"u{i}")
"""


def test_events_are_flushed_at_exit(tmp_path: Any) -> None:
    out = tmp_path / "sent.jsonl"
    subprocess.run([sys.executable, "-c", _ATEXIT_CHILD, str(out)], check=True, timeout=60)
    events = [e for line in out.read_text().splitlines() for e in json.loads(line)["events"]]
    assert [e["unit_id"] for e in events] == ["u0", "u1", "u2"]


def test_uuid7_is_time_ordered_and_well_formed() -> None:
    now = int(time.time() * 1000)
    ids = [uuid7(now) for _ in range(5000)] + [uuid7(now + 1), uuid7(now - 50)]
    assert ids == sorted(ids, key=lambda u: u.int)
    assert len(set(ids)) == len(ids)
    for value in ids[:10]:
        assert value.version == 7 and value.variant == uuid.RFC_4122
    assert uuid7(now).int >> 80 >= now
    assert iso_timestamp(0.5) == "1970-01-01T00:00:00.500000Z"


class _Handler(BaseHTTPRequestHandler):
    received: ClassVar[list[bytes]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.headers.get("If-None-Match") == '"abc"':
            self.send_response(304)
            self.end_headers()
            return
        body = json.dumps(BASE_CONFIG).encode()
        self.send_response(200)
        self.send_header("ETag", '"abc"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.received.append(self.rfile.read(length))
        body = b'{"accepted": 1, "duplicates": 0, "conflicts": 0, "rejected": []}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_the_default_transport_speaks_http_to_a_local_server() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        with Client(url, "k", flush_interval=0.05) as client:
            assert client.wait_until_ready(5)
            assert client.refresh() is False  # 304 through urllib's HTTPError path
            assert client.stats().config_not_modified == 1
            client.track("purchase", "u1", value=2)
            assert client.flush(5)
        assert json.loads(_Handler.received[-1])["events"][0]["value"] == 2
    finally:
        httpd.shutdown()
        httpd.server_close()
    with Client(url, "k", retry=RetryPolicy(max_retry_seconds=0)) as refused:  # nothing listens
        assert refused.refresh() is False
        assert refused.stats().config_errors >= 1


def test_hostile_inputs_never_raise(make_client: Callable[..., Client]) -> None:
    client = make_client(config=make_config(make_experiment()), base_url=None)
    assert client.assign("exp", "\ud800").reason is Reason.ERROR
    assert client.assign(["unhashable"], "u").reason is Reason.UNKNOWN_EXPERIMENT  # type: ignore[arg-type]
    client.track("x", "u", value=float("nan"))
    client.track("x", "u", timestamp="not a time")  # type: ignore[arg-type]
    assert client.stats().dropped.invalid == 2


def test_unknown_and_malformed_experiments_are_logged_once(
    make_client: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(make_experiment("bad", traffic_fraction=0))
    client = make_client(config=config, base_url=None)
    with caplog.at_level("WARNING", logger="trialbook"):
        for _ in range(3):
            assert client.assign("nope", "u").reason is Reason.UNKNOWN_EXPERIMENT
            assert client.assign("bad", "u").reason is Reason.ERROR
    messages = [r.getMessage() for r in caplog.records if "assign(" in r.getMessage()]
    assert sum("'nope'" in m for m in messages) == 1
    assert sum("'bad'" in m and "traffic_fraction" in m for m in messages) == 1
