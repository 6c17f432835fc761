"""The Trialbook client: local assignment plus background config refresh and event delivery.

Threads
-------
``trialbook-config`` fetches ``GET /v1/sdk/config`` every ``refresh_interval`` seconds (±20 %
jitter) with ``If-None-Match``; a 304 keeps the current config. ``trialbook-events`` sends the
queued events (see :mod:`trialbook._delivery`: batches, retries governed by a
:class:`~trialbook.RetryPolicy`, drops reported to ``on_drop``, the optional on-disk spool). Both
are daemon threads; ``close()`` (also run at exit) flushes.

Never in the way
----------------
``assign`` and ``track`` never raise and never touch the network or the disk. Without a config
``assign`` returns variant None with reason ``no_config``. The event queue is bounded: when full,
the oldest event is dropped and counted (``stats().dropped.queue_full``).

Exposure deduplication
----------------------
One exposure per (experiment, phase, unit, variant) per process. The cache holds 64-bit hashes
in two generations of at most ``dedup_cache_size // 2`` each (the older one is discarded when the
newer fills), so memory is bounded (about 80 bytes per entry); a unit seen more than
``dedup_cache_size`` distinct keys ago may log one more exposure, which the analysis tolerates
(same variant).

Fork
----
In a child process the queue is emptied (those events belong to the parent), the spool (if any)
is a new file of the child's, and the threads are restarted on the first call.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import math
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from trialbook._delivery import (
    CONVERSION,
    EXPOSURE,
    Delivery,
    DropReason,
    DropStats,
    OnDrop,
    RetryPolicy,
)
from trialbook._transport import Request, Response, Transport, UrllibTransport
from trialbook.assignment import Assignment, CompiledConfig, Reason, compile_config
from trialbook.dimensions import exposure_attributes
from trialbook.errors import TransportError
from trialbook.hashing import HASH_VERSION

__all__ = ["Client", "ClientLike", "ClientStats"]

logger = logging.getLogger("trialbook")

_LOGGED_KEYS_MAX = 1000


@dataclass(frozen=True)
class ClientStats:
    """Counters since the client started (or since ``fork`` in a child).

    Attributes
    ----------
    exposures_logged, exposures_deduplicated, conversions_tracked
        What the caller's threads enqueued or skipped.
    queued
        Events waiting in memory now.
    spooled
        Events in the spool now (written to disk, not yet acknowledged); 0 without ``spool_dir``.
    spool_recovered
        Events found in the spool at start-up, left unsent by an earlier process.
    events_sent
        Events in batches the server answered 2xx (accepted + duplicates + conflicts + rejected).
    accepted, duplicates, conflicts, rejected
        The server's per-event verdicts summed over batches.
    requests, retries
        ``POST /v1/events`` requests made, and how many of them were retries.
    dropped
        Events given up, by :class:`~trialbook.DropReason` (``dropped.total`` for all); each was
        also reported to ``on_drop``.
    config_fetches, config_not_modified, config_errors
        Config refresh outcomes.
    """

    exposures_logged: int
    exposures_deduplicated: int
    conversions_tracked: int
    queued: int
    spooled: int
    spool_recovered: int
    events_sent: int
    accepted: int
    duplicates: int
    conflicts: int
    rejected: int
    requests: int
    retries: int
    dropped: DropStats
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


_COUNTERS = ("config_fetches", "config_not_modified", "config_errors")

_live_clients: weakref.WeakSet[Client] = weakref.WeakSet()
_left_by_parent: list[Delivery] = []


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
    retry : RetryPolicy, optional
        How long and how often a batch is retried on 408/429/5xx and network errors; default
        ``RetryPolicy()``: for 10 minutes, jittered exponential backoff capped at 30 s.
    on_drop : Callable[[list[dict], DropReason], object], optional
        Called on the sender thread with events given up (as the JSON objects they are sent as)
        and why; an exception it raises is logged and ignored.
    spool_dir : str or Path, optional
        A directory where unsent events are kept (SQLite) until the server acknowledges them, so
        they survive a process restart: the next client with the same ``spool_dir`` sends them.
    spool_max_events : int
        Bound of the spool; the newest events past it are dropped (``spool_full``).
    transport : Transport, optional
        How requests are sent; default :class:`~trialbook._transport.UrllibTransport`.
    sleep : Callable[[float], object], optional
        Waits between retries (tests pass a recorder; the time it is asked to wait counts as
        elapsed for ``retry.max_retry_seconds``); default waits on an event that ``close`` sets
        when its timeout expires.
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
        retry: RetryPolicy | None = None,
        on_drop: OnDrop | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_events: int = 1_000_000,
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
        self._retry = retry if retry is not None else RetryPolicy()
        self._on_drop = on_drop
        self._spool_dir = Path(spool_dir) if spool_dir is not None else None
        self._spool_max_events = max(1, int(spool_max_events))
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
        self._delivery = Delivery(
            url=self._base_url,
            headers=self._auth_headers(),
            transport=self._transport,
            timeout=self._timeout,
            batch_size=self._batch_size,
            flush_interval=self._flush_interval,
            max_queue=self._max_queue,
            retry=self._retry,
            on_drop=self._on_drop,
            spool_dir=self._spool_dir,
            spool_max_events=self._spool_max_events,
            sleep=self._custom_sleep,
        )
        # The hot path reaches these through one attribute lookup each.
        self._queue = self._delivery.queue
        self._wake = self._delivery.wake
        self._seen_new: set[int] = set()
        self._seen_old: set[int] = set()
        self._counts = dict.fromkeys(_COUNTERS, 0)
        # Hot-path counters: next() on itertools.count is atomic under the GIL and lock-free.
        self._n_exposures = itertools.count()
        self._n_deduplicated = itertools.count()
        self._n_conversions = itertools.count()
        self._stop = threading.Event()
        self._ready = threading.Event()
        if self._compiled is not None:
            self._ready.set()
        self._closed = False
        self._needs_restart = False
        self._threads: list[threading.Thread] = []

    def _after_fork_in_child(self) -> None:
        # The parent's delivery (its SQLite connection above all) must never be closed or
        # finalized in the child: SQLite forbids using a connection across fork(), and closing
        # it could checkpoint or remove the parent's WAL. It is kept, untouched, until exit.
        _left_by_parent.append(self._delivery)
        self._init_process_state()
        self._needs_restart = True

    def _start_threads(self) -> None:
        self._needs_restart = False
        if self._base_url is None:
            return
        thread = threading.Thread(target=self._refresh_loop, name="trialbook-config", daemon=True)
        thread.start()
        self._threads.append(thread)
        self._delivery.start()

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
                    self._delivery.drop_oldest()
                queue.append(
                    (
                        EXPOSURE,
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
            else:
                parsed = _unix_seconds(timestamp)
                if parsed is None:
                    self._log_once(
                        ("bad_timestamp", str(name)),
                        "track(%r): timestamp %r is not a time",
                        name,
                        timestamp,
                    )
                    self._delivery.note_drop(
                        DropReason.INVALID, (CONVERSION, name, unit_id, value, timestamp)
                    )
                    return
                moment = parsed
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
                self._delivery.note_drop(
                    DropReason.INVALID, (CONVERSION, name, unit_id, value, moment)
                )
                return
            queue = self._queue
            if len(queue) >= self._max_queue:
                self._delivery.drop_oldest()
            queue.append(
                (
                    CONVERSION,
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
            True when every event enqueued before the call was handled (acknowledged, or
            dropped with a count and reported to ``on_drop``) in time; False on timeout or when
            offline with events queued. Events in the spool are handled once acknowledged.
        """
        if self._needs_restart:
            self._start_threads()
        return self._delivery.flush(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Flush, stop the background threads, and give up on what is left after ``timeout``.

        What is left is dropped (``closed``), or with ``spool_dir`` kept on disk for the next
        process.

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
        self._delivery.stop(abort=not flushed)
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
            counts: dict[str, Any] = dict(self._counts)
        delivery, dropped, spooled = self._delivery.counts()
        return ClientStats(
            exposures_logged=_peek(self._n_exposures),
            exposures_deduplicated=_peek(self._n_deduplicated),
            conversions_tracked=_peek(self._n_conversions),
            queued=len(self._queue),
            spooled=spooled,
            dropped=dropped,
            **delivery,
            **counts,
        )


def _unix_seconds(timestamp: object) -> float | None:
    """``track``'s timestamp as finite Unix seconds (naive datetime = UTC), or None."""
    try:
        if isinstance(timestamp, datetime):
            if timestamp.tzinfo is None:
                timestamp = timestamp.replace(tzinfo=UTC)
            moment = timestamp.timestamp()
        elif isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
            moment = float(timestamp)
        else:
            return None
    except (OverflowError, ValueError, OSError):
        return None
    return moment if math.isfinite(moment) else None


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
