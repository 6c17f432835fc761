"""The Trialbook client: local assignment plus background config refresh and event delivery.

Threads
-------
``trialbook-config`` fetches ``GET /v1/sdk/config`` every ``refresh_interval`` seconds (±20 %
jitter) with ``If-None-Match``; a 304 keeps the current config. ``trialbook-events`` sends the
queue in batches of at most ``batch_size`` every ``flush_interval`` seconds, or sooner when a
batch is full. Both are daemon threads; ``close()`` (also run at exit) flushes.

Never in the way
----------------
``assign`` and ``track`` never raise and never touch the network. Without a config ``assign``
returns variant None with reason ``no_config``. The event queue is bounded: when full, the oldest
event is dropped and counted (``stats().dropped_queue_full``).

Delivery (``POST /v1/events``)
------------------------------
- 2xx: counts ``accepted``, ``duplicates``, ``conflicts``; the ``rejected`` events are dropped
  (never retried) and counted.
- 413: the batch is split in halves, each sent on its own (a single event is dropped).
- 408, 429, 5xx and network errors: retried with full-jitter exponential backoff
  (``uniform(0, min(backoff_max, backoff_base * 2**(attempt - 1)))``), never sooner than
  ``Retry-After`` (seconds or HTTP date), at most ``max_attempts`` sends and ``max_retry_seconds``
  per batch; then dropped and counted.
- 400/422 naming bad events (``rejected`` or ``errors`` items with an ``index``): those are
  dropped, the rest resent; without indexes the batch is dropped and counted.
- 401/403: logged and dropped.

Every event keeps the ``event_id`` (UUIDv7) it got when first batched, so a retry of an event the
server already stored counts as a duplicate there, not as a second event.

Exposure deduplication
----------------------
One exposure per (experiment, phase, unit, variant) per process. The cache holds 64-bit hashes
in two generations of at most ``dedup_cache_size // 2`` each (the older one is discarded when the
newer fills), so memory is bounded (about 80 bytes per entry); a unit seen more than
``dedup_cache_size`` distinct keys ago may log one more exposure, which the analysis tolerates
(same variant).

Fork
----
In a child process the queue is emptied (those events belong to the parent) and the threads are
restarted on the first call.
"""

from __future__ import annotations

import atexit
import email.utils
import itertools
import json
import logging
import math
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from trialbook._events import iso_timestamp, uuid7_str
from trialbook._transport import Request, Response, Transport, UrllibTransport
from trialbook.assignment import Assignment, CompiledConfig, Reason, compile_config
from trialbook.dimensions import exposure_attributes
from trialbook.errors import TransportError
from trialbook.hashing import HASH_VERSION

__all__ = ["Client", "ClientLike", "ClientStats"]

logger = logging.getLogger("trialbook")

# The C JSON string encoder (quotes and escapes; non-ASCII as \\uXXXX), much cheaper per event
# than building a dict and calling json.dumps on it.
_encode_string: Callable[[str], str] = json.encoder.encode_basestring_ascii

_RETRY_STATUSES = frozenset({408, 429})
_LOGGED_KEYS_MAX = 1000
_YIELD_EVERY = 32  # events serialized between two GIL hand-backs (about 50 us of work)

# Queue items are tuples (cheap on the caller's thread); the sender turns them into JSON.
_EXPOSURE = 0
_CONVERSION = 1


@dataclass(frozen=True)
class ClientStats:
    """Counters since the client started (or since ``fork`` in a child).

    Attributes
    ----------
    exposures_logged, exposures_deduplicated, conversions_tracked
        What the caller's threads enqueued or skipped.
    events_sent
        Events in batches the server answered 2xx (accepted + duplicates + conflicts + rejected).
    accepted, duplicates, conflicts, rejected
        The server's per-event verdicts summed over batches.
    requests, retries
        ``POST /v1/events`` requests made, and how many of them were retries.
    dropped_queue_full, dropped_retries_exhausted, dropped_unauthorized, dropped_too_large,
    dropped_invalid
        Events given up, by cause.
    queued
        Events waiting in the queue now.
    config_fetches, config_not_modified, config_errors
        Config refresh outcomes.
    """

    exposures_logged: int
    exposures_deduplicated: int
    conversions_tracked: int
    events_sent: int
    accepted: int
    duplicates: int
    conflicts: int
    rejected: int
    requests: int
    retries: int
    dropped_queue_full: int
    dropped_retries_exhausted: int
    dropped_unauthorized: int
    dropped_too_large: int
    dropped_invalid: int
    queued: int
    config_fetches: int
    config_not_modified: int
    config_errors: int


class ClientLike(Protocol):
    """What code that assigns and tracks needs: :class:`Client` and ``testing.FakeClient``."""

    def assign(
        self, experiment: str, unit_id: str, attributes: Mapping[str, Any] | None = None
    ) -> Assignment:
        """Assign a unit to a variant."""
        ...

    def track(
        self,
        name: str,
        unit_id: str,
        value: float | None = None,
        timestamp: datetime | float | None = None,
    ) -> None:
        """Enqueue a conversion."""
        ...


_COUNTERS = tuple(name for name in ClientStats.__dataclass_fields__ if name != "queued")

_live_clients: weakref.WeakSet[Client] = weakref.WeakSet()


def _parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now)


class Client:
    """Assign variants locally and send exposures and conversions in the background.

    Parameters
    ----------
    base_url : str, optional
        The server, e.g. ``"https://trialbook.example.com"``; default ``$TRIALBOOK_URL``. Without
        it the client works offline from ``config``/``config_path`` and sends nothing.
    api_key : str, optional
        An ``sdk``-role key; default ``$TRIALBOOK_SDK_KEY``.
    config : Mapping, optional
        A config to boot from (the body of ``GET /v1/sdk/config``), e.g. while the server is down
        or in tests; replaced by the first successful fetch.
    config_path : str or Path, optional
        A JSON file holding such a config.
    refresh_interval : float
        Seconds between config fetches (jittered ±20 %).
    flush_interval : float
        Seconds between event sends.
    batch_size : int
        Events per ``POST /v1/events`` (the server takes up to 10,000).
    max_queue_size : int
        Bound of the event queue; the oldest events are dropped beyond it.
    dedup_cache_size : int
        Bound of the exposure deduplication cache (entries).
    log_exposures : bool
        Whether ``assign`` enqueues exposures.
    timeout : float
        Seconds per HTTP request.
    max_attempts : int
        Sends of one batch before it is dropped.
    max_retry_seconds : float
        Time budget of the retries of one batch.
    backoff_base, backoff_max : float
        Backoff parameters in seconds (see the module docstring).
    transport : Transport, optional
        How requests are sent; default :class:`~trialbook._transport.UrllibTransport`.
    sleep : Callable[[float], object], optional
        Waits between retries (tests pass a recorder); default waits on an event that ``close``
        sets when its timeout expires.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        config: Mapping[str, Any] | None = None,
        config_path: str | os.PathLike[str] | None = None,
        refresh_interval: float = 30.0,
        flush_interval: float = 1.0,
        batch_size: int = 1000,
        max_queue_size: int = 100_000,
        dedup_cache_size: int = 100_000,
        log_exposures: bool = True,
        timeout: float = 10.0,
        max_attempts: int = 6,
        max_retry_seconds: float = 60.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        transport: Transport | None = None,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        base_url = base_url if base_url is not None else os.environ.get("TRIALBOOK_URL")
        self._base_url = base_url.rstrip("/") if base_url else None
        self._api_key = api_key if api_key is not None else os.environ.get("TRIALBOOK_SDK_KEY")
        self._refresh_interval = float(refresh_interval)
        self._flush_interval = float(flush_interval)
        self._batch_size = max(1, int(batch_size))
        self._max_queue = max(1, int(max_queue_size))
        self._dedup_half = max(1, int(dedup_cache_size) // 2)
        self._log_exposures = log_exposures
        self._timeout = float(timeout)
        self._max_attempts = max(1, int(max_attempts))
        self._max_retry_seconds = float(max_retry_seconds)
        self._backoff_base = float(backoff_base)
        self._backoff_max = float(backoff_max)
        self._transport: Transport = transport if transport is not None else UrllibTransport()
        self._custom_sleep = sleep
        self._compiled: CompiledConfig | None = None
        self._etag: str | None = None
        self._logged_keys: set[object] = set()
        self._init_process_state()
        if config_path is not None:
            try:
                config = json.loads(Path(config_path).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                logger.error("trialbook: cannot read config file %s: %s", config_path, exc)
        if config is not None:
            self._install_config(config, source="boot config")
        if self._base_url is None:
            logger.warning("trialbook: no base_url (or TRIALBOOK_URL): offline, events not sent")
        _live_clients.add(self)
        self._start_threads()

    # ------------------------------------------------------------------ process state
    def _init_process_state(self) -> None:
        """(Re)create everything that must not be shared with a parent process."""
        self._lock = threading.Lock()
        self._queue: deque[tuple[Any, ...]] = deque(maxlen=self._max_queue)
        self._seen_new: set[int] = set()
        self._seen_old: set[int] = set()
        self._counts = dict.fromkeys(_COUNTERS, 0)
        # Hot-path counters: next() on itertools.count is atomic under the GIL and lock-free.
        self._n_exposures = itertools.count()
        self._n_deduplicated = itertools.count()
        self._n_conversions = itertools.count()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._ready = threading.Event()
        if self._compiled is not None:
            self._ready.set()
        self._flush_cond = threading.Condition()
        self._flush_requested = 0
        self._flush_done = 0
        self._sending = False
        self._closed = False
        self._needs_restart = False
        self._threads: list[threading.Thread] = []

    def _after_fork_in_child(self) -> None:
        self._init_process_state()
        self._needs_restart = True

    def _start_threads(self) -> None:
        self._needs_restart = False
        if self._base_url is None:
            return
        for name, target in (
            ("trialbook-config", self._refresh_loop),
            ("trialbook-events", self._send_loop),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    # ------------------------------------------------------------------ hot path
    def assign(
        self,
        experiment: str,
        unit_id: str,
        attributes: Mapping[str, Any] | None = None,
    ) -> Assignment:
        """Assign ``unit_id`` to a variant of ``experiment`` locally; never raises or blocks.

        Logs one exposure per (experiment, phase, unit, variant) per process when the unit is in
        the experiment (reason ``split``).

        Parameters
        ----------
        experiment : str
            The experiment key.
        unit_id : str
            The randomization unit id (an int is used as its decimal string).
        attributes : Mapping, optional
            Attributes for targeting.

        Returns
        -------
        Assignment
            ``variant``, ``in_experiment``, ``reason`` (see :mod:`trialbook.assignment`), or
            variant None with reason ``no_config`` before the first config.
        """
        try:
            if self._needs_restart:
                self._start_threads()
            compiled = self._compiled
            if compiled is None:
                self._log_once(("no_config", str(experiment)), "no config yet for %r", experiment)
                return Assignment(str(experiment), None, False, Reason.NO_CONFIG, None)
            result = compiled.evaluate(experiment, unit_id, attributes)
            if result.in_experiment:
                if not self._log_exposures:
                    return result
                # Exposure logging, inlined (one call less on the hot path) and lock-free on
                # purpose: each step is atomic under the GIL; two threads racing on the same new
                # unit may both log it, a harmless duplicate of the same variant.
                key = hash((result.experiment, result.phase, unit_id, result.variant))
                if key in self._seen_new or key in self._seen_old:
                    next(self._n_deduplicated)
                    return result
                seen = self._seen_new
                seen.add(key)
                if len(seen) >= self._dedup_half:
                    self._rotate_seen(seen)
                queue = self._queue
                if len(queue) >= self._max_queue:
                    self._count("dropped_queue_full")  # deque(maxlen) drops the oldest
                queue.append(
                    (
                        _EXPOSURE,
                        result.experiment,
                        result.variant,
                        unit_id if type(unit_id) is str else str(unit_id),
                        result.phase,
                        time.time(),
                        # the experiment's dimensions among the attributes (product.md §12)
                        attributes and exposure_attributes(compiled.raw, experiment, attributes),
                    )
                )
                next(self._n_exposures)
                if len(queue) >= self._batch_size and not self._wake.is_set():
                    self._wake.set()
            elif result.reason is Reason.UNKNOWN_EXPERIMENT or result.reason is Reason.ERROR:
                self._log_once(
                    (result.reason, result.experiment),
                    "assign(%r): %s %s",
                    experiment,
                    result.reason.value,
                    compiled.experiment_errors(experiment)[:3],
                )
            return result
        except Exception:
            logger.exception("trialbook: assign(%r) failed", experiment)
            return Assignment(str(experiment), None, False, Reason.ERROR, None)

    def _rotate_seen(self, full: set[int]) -> None:
        with self._lock:
            if self._seen_new is full:
                self._seen_old = full
                self._seen_new = set()

    def track(
        self,
        name: str,
        unit_id: str,
        value: float | None = None,
        timestamp: datetime | float | None = None,
    ) -> None:
        """Enqueue a conversion event; never raises or blocks.

        Parameters
        ----------
        name : str
            The event name (what metrics count).
        unit_id : str
            The unit that converted.
        value : float, optional
            The event value; omitted means 1 on the server.
        timestamp : datetime or float, optional
            When it happened (aware datetime, naive = UTC, or Unix seconds); default now.
        """
        try:
            if self._needs_restart:
                self._start_threads()
            if timestamp is None:
                moment = time.time()
            elif isinstance(timestamp, datetime):
                if timestamp.tzinfo is None:
                    timestamp = timestamp.replace(tzinfo=UTC)
                moment = timestamp.timestamp()
            else:
                moment = float(timestamp)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                self._log_once(
                    ("bad_value", str(name)),
                    "track(%r): value %r is not a finite number",
                    name,
                    value,
                )
                with self._lock:
                    self._counts["dropped_invalid"] += 1
                return
            queue = self._queue
            if len(queue) >= self._max_queue:
                self._count("dropped_queue_full")  # deque(maxlen) drops the oldest
            queue.append(
                (
                    _CONVERSION,
                    name if type(name) is str else str(name),
                    unit_id if type(unit_id) is str else str(unit_id),
                    value,
                    moment,
                )
            )
            next(self._n_conversions)
            if len(queue) >= self._batch_size and not self._wake.is_set():
                self._wake.set()
        except Exception:
            logger.exception("trialbook: track(%r) failed", name)

    def _log_once(self, key: object, message: str, *args: object) -> None:
        if key in self._logged_keys or len(self._logged_keys) >= _LOGGED_KEYS_MAX:
            return
        self._logged_keys.add(key)
        logger.warning("trialbook: " + message, *args)

    # ------------------------------------------------------------------ config
    @property
    def config(self) -> CompiledConfig | None:
        """The config in use (None before the first one)."""
        return self._compiled

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Block until a config is available (call it at start-up, not on a hot path).

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait at most.

        Returns
        -------
        bool
            True when a config is available.
        """
        return self._ready.wait(timeout)

    def _install_config(self, config: object, source: str, fetched: Response | None = None) -> bool:
        """Compile and use ``config``; ``fetched`` is the server answer it came from, if any."""
        if not isinstance(config, Mapping) or config.get("hash_version") != HASH_VERSION:
            version = config.get("hash_version") if isinstance(config, Mapping) else None
            logger.error(
                "trialbook: %s ignored: hash_version %r (this SDK speaks %d)",
                source,
                version,
                HASH_VERSION,
            )
            return False
        compiled = compile_config(config)
        if compiled.errors:
            logger.warning("trialbook: %s has problems: %s", source, compiled.errors[:5])
        self._compiled = compiled
        if fetched is not None:
            # Recorded before readiness is signalled: a refresh() right after wait_until_ready()
            # must already send If-None-Match (and stats() count the fetch).
            self._etag = fetched.headers.get("etag")
            self._count("config_fetches")
        self._ready.set()
        return True

    def refresh(self) -> bool:
        """Fetch the config now (the background thread calls this); never raises.

        Returns
        -------
        bool
            True when a new config was installed.
        """
        if self._base_url is None:
            return False
        headers = {"Accept": "application/json", **self._auth_headers()}
        if self._etag is not None:
            headers["If-None-Match"] = self._etag
        request = Request("GET", self._base_url + "/v1/sdk/config", headers)
        try:
            response = self._transport.send(request, self._timeout)
        except TransportError as exc:
            self._count("config_errors")
            logger.warning("trialbook: config fetch failed: %s", exc)
            return False
        except Exception:
            self._count("config_errors")
            logger.exception("trialbook: config fetch failed")
            return False
        if response.status == 304:
            self._count("config_not_modified")
            return False
        if response.status != 200:
            self._count("config_errors")
            level = logging.ERROR if response.status in (401, 403) else logging.WARNING
            logger.log(level, "trialbook: config fetch answered %d", response.status)
            return False
        try:
            config = json.loads(response.body)
        except ValueError as exc:
            self._count("config_errors")
            logger.warning("trialbook: config is not JSON: %s", exc)
            return False
        if not self._install_config(config, "config from server", fetched=response):
            self._count("config_errors")
            return False
        return True

    def _refresh_loop(self) -> None:
        stop = self._stop
        while not stop.is_set():
            self.refresh()
            stop.wait(self._refresh_interval * random.uniform(0.8, 1.2))

    # ------------------------------------------------------------------ delivery
    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _send_loop(self) -> None:
        while True:
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            with self._flush_cond:
                requested = self._flush_requested
            self._drain()
            with self._flush_cond:
                self._flush_done = max(self._flush_done, requested)
                self._flush_cond.notify_all()
            if self._stop.is_set():
                return

    def _drain(self) -> None:
        """Send everything queued now, batch by batch."""
        queue = self._queue
        remaining = len(queue)
        while remaining > 0 and not self._abort.is_set():
            items: list[tuple[Any, ...]] = []
            while len(items) < self._batch_size and remaining > 0:
                try:
                    items.append(queue.popleft())
                except IndexError:
                    remaining = 0
                    break
                remaining -= 1
            if items:
                self._deliver(self._serialize(items))
        if self._abort.is_set() and queue:
            self._count("dropped_retries_exhausted", len(queue))
            queue.clear()

    def _serialize(self, items: list[tuple[Any, ...]]) -> list[str]:
        """Turn queued items into JSON texts, yielding the GIL between small chunks.

        The sender must never be in the way of the application: serializing 1,000 events holds
        the GIL for milliseconds, and a thread that waits for the GIL waits a whole switch
        interval (5 ms) by default. ``time.sleep(0)`` every ``_YIELD_EVERY`` events hands the GIL
        back to application threads at once.
        """
        randomness = os.urandom(10 * len(items))
        events: list[str] = []
        to_event = self._to_event
        for start in range(0, len(items), _YIELD_EVERY):
            for i in range(start, min(start + _YIELD_EVERY, len(items))):
                events.append(to_event(items[i], int.from_bytes(randomness[10 * i : 10 * i + 10])))
            time.sleep(0)
        return events

    @staticmethod
    def _to_event(item: tuple[Any, ...], rand: int) -> str:
        """Serialize one queued item to its JSON object text (kept as is across retries)."""
        enc = _encode_string
        if item[0] == _EXPOSURE:
            _, experiment, variant, unit_id, phase, moment, attrs = item
            phase_text = "" if phase is None else f',"phase":{int(phase)}'
            if attrs:
                phase_text += ',"attributes":' + json.dumps(attrs, ensure_ascii=False)
            return (
                f'{{"event_id":"{uuid7_str(int(moment * 1000), rand)}","type":"exposure",'
                f'"experiment":{enc(experiment)},"variant":{enc(variant)},'
                f'"unit_id":{enc(unit_id)},"timestamp":"{iso_timestamp(moment)}"{phase_text}}}'
            )
        _, name, unit_id, value, moment = item
        value_text = "" if value is None else f',"value":{value!r}'
        return (
            f'{{"event_id":"{uuid7_str(int(moment * 1000), rand)}","type":"conversion",'
            f'"name":{enc(name)},"unit_id":{enc(unit_id)},'
            f'"timestamp":"{iso_timestamp(moment)}"{value_text}}}'
        )

    def _wait(self, seconds: float) -> None:
        if self._custom_sleep is not None:
            self._custom_sleep(seconds)
        else:
            self._abort.wait(seconds)

    def _deliver(self, events: list[str]) -> None:
        """Send one batch until it is acknowledged, split, dropped or out of retries."""
        if self._base_url is None:
            return
        pending = [events]
        while pending:
            batch = pending.pop()
            started = time.monotonic()
            attempt = 0
            while batch:
                attempt += 1
                if attempt > 1:
                    self._count("retries")
                self._count("requests")
                body = ('{"events":[' + ",".join(batch) + "]}").encode()
                headers = {"Content-Type": "application/json", **self._auth_headers()}
                request = Request("POST", self._base_url + "/v1/events", headers, body)
                retry_after: float | None = None
                try:
                    response: Response | None = self._transport.send(request, self._timeout)
                except TransportError as exc:
                    logger.warning("trialbook: sending %d events failed: %s", len(batch), exc)
                    response = None
                except Exception:
                    logger.exception("trialbook: sending %d events failed", len(batch))
                    response = None
                if response is not None:
                    status = response.status
                    if 200 <= status < 300:
                        self._acknowledge(batch, response)
                        batch = []
                        break
                    if status == 413:
                        if len(batch) == 1:
                            logger.error("trialbook: one event is too large (413): dropped")
                            self._count("dropped_too_large")
                        else:
                            half = len(batch) // 2
                            pending.extend((batch[half:], batch[:half]))
                        batch = []
                        break
                    if status in (401, 403):
                        logger.error(
                            "trialbook: events refused (%d): check the SDK key; %d dropped",
                            status,
                            len(batch),
                        )
                        self._count("dropped_unauthorized", len(batch))
                        batch = []
                        break
                    if status in (400, 422):
                        bad = self._bad_indexes(response, len(batch))
                        if not bad:
                            logger.error(
                                "trialbook: batch refused (%d): %r; %d dropped",
                                status,
                                response.body[:300],
                                len(batch),
                            )
                            self._count("dropped_invalid", len(batch))
                            batch = []
                            break
                        self._count("dropped_invalid", len(bad))
                        batch = [e for i, e in enumerate(batch) if i not in bad]
                        continue
                    if status not in _RETRY_STATUSES and status < 500:
                        logger.error(
                            "trialbook: events answered %d: %d dropped", status, len(batch)
                        )
                        self._count("dropped_invalid", len(batch))
                        batch = []
                        break
                    retry_after = _parse_retry_after(
                        response.headers.get("retry-after"), time.time()
                    )
                    logger.warning("trialbook: events answered %d; will retry", status)
                # A retryable failure: back off, unless out of attempts or time.
                delay = random.uniform(
                    0.0, min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1))
                )
                if retry_after is not None:
                    delay = max(delay, retry_after)
                elapsed = time.monotonic() - started
                if (
                    attempt >= self._max_attempts
                    or elapsed + delay > self._max_retry_seconds
                    or self._abort.is_set()
                ):
                    logger.error(
                        "trialbook: giving up on %d events after %d attempts", len(batch), attempt
                    )
                    self._count("dropped_retries_exhausted", len(batch))
                    batch = []
                    break
                self._wait(delay)

    @staticmethod
    def _bad_indexes(response: Response, size: int) -> set[int]:
        try:
            payload = json.loads(response.body)
        except ValueError:
            return set()
        items: list[Any] = []
        if isinstance(payload, Mapping):
            for field in ("rejected", "errors"):
                value = payload.get(field)
                if isinstance(value, list):
                    items.extend(value)
        bad: set[int] = set()
        for item in items:
            index = item.get("index") if isinstance(item, Mapping) else None
            if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < size:
                bad.add(index)
        return bad

    def _acknowledge(self, batch: list[str], response: Response) -> None:
        try:
            payload = json.loads(response.body) if response.body else {}
        except ValueError:
            payload = {}
        if not isinstance(payload, Mapping):
            payload = {}
        rejected = payload.get("rejected") or []
        if not isinstance(rejected, list):
            rejected = []
        counts = {}
        for field in ("accepted", "duplicates", "conflicts"):
            value = payload.get(field)
            counts[field] = value if isinstance(value, int) else 0
        if not any(counts.values()) and not rejected:
            counts["accepted"] = len(batch)  # a bare 2xx: the events are committed
        for item in rejected[:3]:
            logger.warning("trialbook: event rejected by the server: %r", item)
        with self._lock:
            self._counts["events_sent"] += len(batch)
            for field, value in counts.items():
                self._counts[field] += value
            self._counts["rejected"] += len(rejected)

    # ------------------------------------------------------------------ lifecycle
    def flush(self, timeout: float | None = 10.0) -> bool:
        """Send everything enqueued so far and wait for the answers.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait at most (None: no limit).

        Returns
        -------
        bool
            True when every event enqueued before the call was handled (acknowledged or
            dropped with a count) in time; False on timeout or when offline with events queued.
        """
        if self._needs_restart:
            self._start_threads()
        if not self._threads or not any(t.is_alive() for t in self._threads):
            return not self._queue
        with self._flush_cond:
            self._flush_requested += 1
            target = self._flush_requested
            self._wake.set()
            return self._flush_cond.wait_for(lambda: self._flush_done >= target, timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Flush, stop the background threads, and give up on what is left after ``timeout``.

        Parameters
        ----------
        timeout : float, optional
            Seconds for the final flush.

        Returns
        -------
        bool
            True when everything was flushed.
        """
        if self._closed:
            return not self._queue
        flushed = self.flush(timeout)
        self._closed = True
        self._stop.set()
        if not flushed:
            self._abort.set()
        self._wake.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=max(1.0, self._timeout))
        return flushed

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stats(self) -> ClientStats:
        """Return the counters (what was logged, sent, retried and dropped).

        Returns
        -------
        ClientStats
            A snapshot.
        """
        with self._lock:
            counts = dict(self._counts)
        counts["exposures_logged"] = _peek(self._n_exposures)
        counts["exposures_deduplicated"] = _peek(self._n_deduplicated)
        counts["conversions_tracked"] = _peek(self._n_conversions)
        return ClientStats(queued=len(self._queue), **counts)


def _peek(counter: itertools.count[int]) -> int:
    """The next value of an ``itertools.count`` without advancing it (its repr is count(N))."""
    return int(repr(counter)[6:-1])


def _close_all_at_exit() -> None:
    for client in list(_live_clients):
        try:
            client.close(timeout=5.0)
        except Exception:  # at exit nothing may raise
            logger.exception("trialbook: close at exit failed")


def _reinit_after_fork() -> None:
    for client in list(_live_clients):
        client._after_fork_in_child()


atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)
