"""Event delivery: the ``trialbook-events`` thread, its retry policy, drops, and the spool.

What happens to an event
------------------------
``assign``/``track`` append a small tuple to an in-memory queue (bounded by ``max_queue_size``;
when full, the oldest event is dropped: reason ``queue_full``). Every ``flush_interval`` seconds,
or sooner when a batch is full, the sender thread takes the queue:

- without a spool, it serializes up to ``batch_size`` events and sends them;
- with ``spool_dir``, it first writes the whole queue to the spool (one SQLite transaction; past
  ``spool_max_events`` the newest are dropped: ``spool_full``), then sends from the spool, oldest
  first, and deletes a row only once the server acknowledged it (or it was dropped and counted).
  While a batch waits to be retried, the queue keeps moving to the spool (every 0.5 s), so an
  outage fills the disk, not memory.

Answers of ``POST /v1/events``
------------------------------
- 2xx: ``accepted``, ``duplicates`` and ``conflicts`` are counted; ``rejected`` events are dropped
  (reason ``rejected``, never retried).
- 413: the batch is split in halves, each sent on its own; a single event is dropped
  (``too_large``).
- 400/422 naming events (``rejected`` or ``errors`` items with an ``index``): those are dropped
  (``rejected``) and the rest resent; without indexes, or any other 4xx, the batch is dropped
  (``rejected``). 401/403: dropped (``unauthorized``), check the key.
- 408, 429, 5xx and network errors: retried, governed by time (:class:`RetryPolicy`): full-jitter
  exponential backoff ``uniform(0, min(backoff_max, backoff_base * 2**(attempt - 1)))``, never
  sooner than ``Retry-After`` (seconds or HTTP date), until ``max_retry_seconds`` have passed
  since the batch's first attempt; the last attempt is made at that deadline, then the batch is
  dropped (``timed_out``). A ``Retry-After`` beyond the deadline drops it at once.
- ``close()`` whose flush timed out: without a spool what is left is dropped (``closed``); with
  a spool it stays on disk for the next process.

Every event keeps the ``event_id`` (UUIDv7) it got when it was serialized, across retries and
process restarts, so a resend of an event the server already stored is a duplicate there.

Drops are counted (``Client.stats().dropped``) and reported to ``on_drop(events, reason)`` on the
sender thread, with the events as dicts (the JSON objects sent, or that would have been sent). An
``on_drop`` that raises is logged and delivery goes on; one that blocks holds up delivery.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import random
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from enum import StrEnum
from pathlib import Path
from typing import Any

from trialbook._events import iso_timestamp, uuid7_str
from trialbook._spool import Spool
from trialbook._transport import Request, Response, Transport
from trialbook.errors import TransportError

__all__ = ["DropReason", "DropStats", "OnDrop", "RetryPolicy"]

logger = logging.getLogger("trialbook")

# Queue items are tuples (cheap on the caller's thread); the sender turns them into JSON.
#   (EXPOSURE, experiment, variant, unit_id, phase, unix_seconds, attributes or None)
#   (CONVERSION, name, unit_id, value, unix_seconds)
# A new field (e.g. an exposure's ``attributes``) goes at the end of its tuple, in ``assign`` and
# in ``to_json``; nothing else here looks inside an item.
EXPOSURE = 0
CONVERSION = 1

# The C JSON string encoder (quotes and escapes; non-ASCII as \\uXXXX), much cheaper per event
# than building a dict and calling json.dumps on it.
_encode_string: Callable[[str], str] = json.encoder.encode_basestring_ascii

_RETRY_STATUSES = frozenset({408, 429})
_YIELD_EVERY = 32  # events serialized between two GIL hand-backs (about 50 us of work)
_WAIT_SLICE = 0.5  # seconds: while a retry waits, the queue moves to the spool this often


class DropReason(StrEnum):
    """Why events were given up (the names of :class:`DropStats`' fields)."""

    QUEUE_FULL = "queue_full"
    """The in-memory queue was full (``max_queue_size``): the oldest event made room."""
    SPOOL_FULL = "spool_full"
    """The spool held ``spool_max_events``: the newest events did not fit."""
    TIMED_OUT = "timed_out"
    """The server did not take them within ``RetryPolicy.max_retry_seconds``."""
    CLOSED = "closed"
    """``close()`` timed out with events unsent and no spool to keep them."""
    UNAUTHORIZED = "unauthorized"
    """The server answered 401/403 (a wrong or revoked key)."""
    TOO_LARGE = "too_large"
    """One event alone was answered 413."""
    REJECTED = "rejected"
    """The server refused them as permanently invalid (``rejected`` in a 2xx, or a 4xx)."""
    INVALID = "invalid"
    """``track`` got a value or timestamp that is not a finite number (never sent)."""


OnDrop = Callable[[list[dict[str, Any]], DropReason], object]
"""``on_drop(events, reason)``: called on the sender thread with the dropped events as dicts."""


@dataclass(frozen=True)
class DropStats:
    """Events dropped since the client started, by :class:`DropReason`."""

    queue_full: int = 0
    spool_full: int = 0
    timed_out: int = 0
    closed: int = 0
    unauthorized: int = 0
    too_large: int = 0
    rejected: int = 0
    invalid: int = 0

    @property
    def total(self) -> int:
        """Events dropped for any reason."""
        return sum(getattr(self, reason.value) for reason in DropReason)


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often a batch is retried (408, 429, 5xx, network errors).

    Parameters
    ----------
    max_retry_seconds : float
        Time budget of one batch, from its first attempt; then it is dropped (``timed_out``).
        ``math.inf`` retries forever. The default (10 minutes) rides out a server restart or a
        short outage.
    backoff_base : float
        Seconds: the ceiling of the first wait, doubled at every attempt.
    backoff_max : float
        Seconds: the highest ceiling (the wait is uniform between 0 and the ceiling: full
        jitter, so that many clients do not come back at the same instant).

    Raises
    ------
    ValueError
        For a negative or NaN value, or an infinite backoff.
    """

    max_retry_seconds: float = 600.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_retry_seconds", "backoff_base", "backoff_max"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or math.isnan(value)
                or value < 0
                or (name != "max_retry_seconds" and math.isinf(value))
            ):
                raise ValueError(f"RetryPolicy.{name} must be a finite number >= 0, got {value!r}")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based), jittered."""
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** min(attempt - 1, 62))
        return random.uniform(0.0, ceiling)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now)


def to_json(item: tuple[Any, ...], rand: int) -> str:
    """Serialize one queued item to its JSON object text (kept as is across retries)."""
    enc = _encode_string
    if item[0] == EXPOSURE:
        _, experiment, variant, unit_id, phase, moment, attrs = item
        phase_text = "" if phase is None else f',"phase":{int(phase)}'
        if attrs:
            # the experiment's dimensions among the unit's attributes (product.md §12)
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


def to_dict(item: tuple[Any, ...]) -> dict[str, Any]:
    """A queued item as a dict for ``on_drop`` (never raises: raw fields for unusable ones)."""
    try:
        event: dict[str, Any] = json.loads(to_json(item, int.from_bytes(os.urandom(10))))
        return event
    except Exception:
        if item and item[0] == EXPOSURE:
            fields = ("experiment", "variant", "unit_id", "phase", "timestamp", "attributes")
            return {"type": "exposure", **dict(zip(fields, item[1:], strict=False))}
        if item and item[0] == CONVERSION:
            names = ("name", "unit_id", "value", "timestamp")
            return {"type": "conversion", **dict(zip(names, item[1:], strict=False))}
        return {"item": repr(item)}


# A batch row: (spool seq or None, JSON text of the event).
Row = tuple[int | None, str]


class Delivery:
    """The queue, the sender thread, its counters and (optionally) the spool of one client."""

    def __init__(
        self,
        *,
        url: str | None,
        headers: Mapping[str, str],
        transport: Transport,
        timeout: float,
        batch_size: int,
        flush_interval: float,
        max_queue: int,
        retry: RetryPolicy,
        on_drop: OnDrop | None,
        spool_dir: Path | None,
        spool_max_events: int,
        sleep: Callable[[float], object] | None,
    ) -> None:
        self._url = url
        self._headers = {"Content-Type": "application/json", **headers}
        self._transport = transport
        self._timeout = timeout
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._retry = retry
        self._on_drop = on_drop
        self._spool_dir = spool_dir
        self._spool_max_events = spool_max_events
        self._custom_sleep = sleep
        self._slept = 0.0  # seconds the custom sleep was asked to wait: they count as elapsed
        # No maxlen: the hot path drops the oldest itself, so every dropped event is reported.
        self.queue: deque[tuple[Any, ...]] = deque()
        # Dropped on the caller's threads, reported by the sender (bounded: past it, only counted).
        self._dropped_items: deque[tuple[DropReason, tuple[Any, ...]]] = deque(maxlen=max_queue)
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._flush_cond = threading.Condition()
        self._flush_requested = 0
        self._flush_done = 0
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(
            (
                "events_sent",
                "accepted",
                "duplicates",
                "conflicts",
                "rejected",
                "requests",
                "retries",
                "spool_recovered",
            ),
            0,
        )
        self._drops = dict.fromkeys(DropReason, 0)
        self._spool: Spool | None = None
        self._finished = threading.Lock()
        self._is_finished = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ caller's threads
    def drop_oldest(self) -> None:
        """Make room in a full queue (the caller's thread: never blocks on I/O)."""
        try:
            item = self.queue.popleft()
        except IndexError:
            return
        self.note_drop(DropReason.QUEUE_FULL, item)

    def note_drop(self, reason: DropReason, item: tuple[Any, ...]) -> None:
        """Count one event dropped on a caller's thread; the sender reports it to ``on_drop``."""
        with self._lock:
            self._drops[reason] += 1
        if self._on_drop is not None:
            self._dropped_items.append((reason, item))

    def start(self) -> None:
        """Start the sender thread (nothing to do offline)."""
        if self._url is None:
            return
        self._thread = threading.Thread(target=self._run, name="trialbook-events", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the sender thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def flush(self, timeout: float | None) -> bool:
        """Ask the sender for a full pass and wait for it (see ``Client.flush``)."""
        if not self.alive:
            return not self.queue
        with self._flush_cond:
            self._flush_requested += 1
            target = self._flush_requested
            self.wake.set()
            return self._flush_cond.wait_for(lambda: self._flush_done >= target, timeout)

    def stop(self, abort: bool) -> None:
        """Stop the sender; with ``abort``, give up what is unsent (kept if spooled)."""
        self._stop.set()
        if abort:
            self._abort.set()
        self.wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(1.0, self._timeout))
            if thread.is_alive():  # stuck in a request: do its last duties from here
                self._finish()

    def counts(self) -> tuple[dict[str, int], DropStats, int]:
        """The delivery counters, the drops, and the events in the spool now."""
        with self._lock:
            counts = dict(self._counts)
            drops = DropStats(**{reason.value: n for reason, n in self._drops.items()})
        spool = self._spool
        return counts, drops, spool.count if spool is not None else 0

    # ------------------------------------------------------------------ sender thread
    def _run(self) -> None:
        if self._spool_dir is not None:
            self._open_spool(self._spool_dir)
        while True:
            self.wake.wait(self._flush_interval)
            self.wake.clear()
            with self._flush_cond:
                requested = self._flush_requested
            try:
                self._cycle()
            except Exception:  # the thread must survive a bug: later events still go out
                logger.exception("trialbook: event delivery failed")
            with self._flush_cond:
                self._flush_done = max(self._flush_done, requested)
                self._flush_cond.notify_all()
            if self._stop.is_set():
                self._finish()
                return

    def _open_spool(self, directory: Path) -> None:
        try:
            spool = Spool(directory, self._spool_max_events)
        except (OSError, sqlite3.Error) as exc:
            logger.error(
                "trialbook: spool_dir %s unusable (%s): events kept in memory", directory, exc
            )
            return
        self._spool = spool
        self._count("spool_recovered", spool.recovered)

    def _finish(self) -> None:
        """Last duties, once: keep or drop what is left, report drops, close the spool."""
        with self._finished:
            if self._is_finished:
                return
            self._is_finished = True
            try:
                spool = self._spool
                if spool is not None:
                    self._move_to_spool(spool)
                if self.queue:
                    self._drop_items(DropReason.CLOSED, self._take(len(self.queue)))
                self._report_dropped_items()
                if spool is not None:
                    spool.close()
            except Exception:
                logger.exception("trialbook: closing the event delivery failed")

    def _cycle(self) -> None:
        """Send everything queued (and spooled) now."""
        self._report_dropped_items()
        spool = self._spool
        if spool is not None:
            self._drain_spool(spool)
        else:
            self._drain_memory()
        self._report_dropped_items()

    def _take(self, n: int) -> list[tuple[Any, ...]]:
        queue = self.queue
        items: list[tuple[Any, ...]] = []
        for _ in range(n):
            try:
                items.append(queue.popleft())
            except IndexError:
                break
        return items

    def _drain_memory(self) -> None:
        remaining = len(self.queue)
        while remaining > 0 and not self._abort.is_set():
            items = self._take(min(remaining, self._batch_size))
            remaining -= self._batch_size
            if items:
                self._deliver([(None, text) for text in self._serialize(items)])
        if self._abort.is_set() and self._spool is None and self.queue:
            self._drop_items(DropReason.CLOSED, self._take(len(self.queue)))

    def _drain_spool(self, spool: Spool) -> None:
        if not self._move_to_spool(spool):
            self._drain_memory()
            return
        try:
            last = spool.last_seq()
            while not self._abort.is_set():
                rows = spool.peek(self._batch_size, last)
                if not rows:
                    break
                done = self._deliver([(seq, body) for seq, body in rows])
                spool.delete([seq for seq in done if seq is not None])
        except sqlite3.Error as exc:
            # The rows stay on disk (the next process sends them); carry on from memory.
            logger.error("trialbook: spool failed (%s): events kept in memory from now on", exc)
            self._spool = None

    def _move_to_spool(self, spool: Spool) -> bool:
        """Write the queue to the spool; False (items back in the queue) if the disk refuses."""
        items = self._take(len(self.queue))
        if not items:
            return True
        room = spool.max_events - spool.count
        if len(items) > room:
            self._drop_items(DropReason.SPOOL_FULL, items[max(0, room) :])
            items = items[: max(0, room)]
        if not items:
            return True
        texts = self._serialize(items)
        try:
            spool.add(texts)
        except sqlite3.Error as exc:
            logger.error("trialbook: spool write failed (%s): events kept in memory", exc)
            self.queue.extendleft(reversed(items))
            self._spool = None
            return False
        return True

    def _serialize(self, items: list[tuple[Any, ...]]) -> list[str]:
        """Turn queued items into JSON texts, yielding the GIL between small chunks.

        The sender must never be in the way of the application: serializing 1,000 events holds
        the GIL for milliseconds, and a thread that waits for the GIL waits a whole switch
        interval (5 ms) by default. ``time.sleep(0)`` every ``_YIELD_EVERY`` events hands the GIL
        back to application threads at once. An item that cannot be serialized is dropped
        (``invalid``), never the batch.
        """
        randomness = os.urandom(10 * len(items))
        events: list[str] = []
        bad: list[tuple[Any, ...]] = []
        for start in range(0, len(items), _YIELD_EVERY):
            for i in range(start, min(start + _YIELD_EVERY, len(items))):
                try:
                    events.append(
                        to_json(items[i], int.from_bytes(randomness[10 * i : 10 * i + 10]))
                    )
                except Exception:
                    bad.append(items[i])
            time.sleep(0)
        if bad:
            logger.error("trialbook: %d events could not be serialized: dropped", len(bad))
            self._drop_items(DropReason.INVALID, bad)
        return events

    # ------------------------------------------------------------------ drops
    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _report(self, reason: DropReason, events: list[dict[str, Any]]) -> None:
        callback = self._on_drop
        if callback is None or not events:
            return
        try:
            callback(events, reason)
        except Exception:
            logger.exception("trialbook: on_drop raised (ignored)")

    def _drop_rows(self, reason: DropReason, rows: list[Row], uncounted: int = 0) -> None:
        """Count and report events dropped on the sender thread (``uncounted``: not in rows)."""
        with self._lock:
            self._drops[reason] += len(rows) + uncounted
        if self._on_drop is not None:
            events: list[dict[str, Any]] = []
            for _, text in rows:
                try:
                    events.append(json.loads(text))
                except ValueError:
                    events.append({"body": text})
            self._report(reason, events)

    def _drop_items(self, reason: DropReason, items: list[tuple[Any, ...]]) -> None:
        with self._lock:
            self._drops[reason] += len(items)
        if self._on_drop is not None:
            self._report(reason, [to_dict(item) for item in items])

    def _report_dropped_items(self) -> None:
        """Hand the events dropped on callers' threads to ``on_drop``, grouped by reason."""
        pending = self._dropped_items
        while pending:
            reason, first = pending.popleft()
            group = [to_dict(first)]
            while pending and pending[0][0] is reason and len(group) < self._batch_size:
                group.append(to_dict(pending.popleft()[1]))
            self._report(reason, group)

    # ------------------------------------------------------------------ sending
    def _now(self) -> float:
        return time.monotonic() + self._slept

    def _wait(self, seconds: float) -> None:
        """Wait before a retry; meanwhile the queue moves to the spool and drops are reported."""
        if self._custom_sleep is not None:
            self._custom_sleep(seconds)
            self._slept += seconds
            self._housekeeping()
            return
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self._abort.wait(min(left, _WAIT_SLICE)):
                return
            self._housekeeping()

    def _housekeeping(self) -> None:
        spool = self._spool
        if spool is not None:
            self._move_to_spool(spool)
        self._report_dropped_items()

    def _deliver(self, rows: list[Row]) -> list[int | None]:
        """Send one batch until every event is acknowledged or dropped; return their keys.

        Keys of events left unsent (only when aborted with a spool: they stay on disk) are not
        returned.
        """
        done: list[int | None] = []
        if self._url is None:
            return done
        url = self._url + "/v1/events"
        pending = [rows]
        while pending:
            batch = pending.pop()
            started = self._now()
            attempt = 0
            while batch:
                if self._abort.is_set():
                    if self._spool is None:
                        self._drop_rows(DropReason.CLOSED, batch)
                        done.extend(key for key, _ in batch)
                    batch = []
                    break
                attempt += 1
                if attempt > 1:
                    self._count("retries")
                self._count("requests")
                body = ('{"events":[' + ",".join(text for _, text in batch) + "]}").encode()
                request = Request("POST", url, self._headers, body)
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
                        done.extend(key for key, _ in batch)
                        break
                    if status == 413:
                        if len(batch) == 1:
                            logger.error("trialbook: one event is too large (413): dropped")
                            self._drop_rows(DropReason.TOO_LARGE, batch)
                            done.extend(key for key, _ in batch)
                        else:
                            half = len(batch) // 2
                            pending.extend((batch[half:], batch[:half]))
                        break
                    if status in (401, 403):
                        logger.error(
                            "trialbook: events refused (%d): check the SDK key; %d dropped",
                            status,
                            len(batch),
                        )
                        self._drop_rows(DropReason.UNAUTHORIZED, batch)
                        done.extend(key for key, _ in batch)
                        break
                    if status in (400, 422):
                        bad = _bad_indexes(response, len(batch))
                        if bad:
                            self._drop_rows(DropReason.REJECTED, [batch[i] for i in sorted(bad)])
                            done.extend(batch[i][0] for i in sorted(bad))
                            batch = [row for i, row in enumerate(batch) if i not in bad]
                            continue
                    if status in (400, 422) or (status not in _RETRY_STATUSES and status < 500):
                        logger.error(
                            "trialbook: events answered %d: %r; %d dropped",
                            status,
                            response.body[:300],
                            len(batch),
                        )
                        self._drop_rows(DropReason.REJECTED, batch)
                        done.extend(key for key, _ in batch)
                        break
                    retry_after = parse_retry_after(
                        response.headers.get("retry-after"), time.time()
                    )
                    logger.warning("trialbook: events answered %d; will retry", status)
                # A retryable failure: back off until the time budget is spent.
                remaining = self._retry.max_retry_seconds - (self._now() - started)
                if remaining <= 0 or (retry_after is not None and retry_after > remaining):
                    logger.error(
                        "trialbook: giving up on %d events after %d attempts in %.0f s",
                        len(batch),
                        attempt,
                        self._now() - started,
                    )
                    self._drop_rows(DropReason.TIMED_OUT, batch)
                    done.extend(key for key, _ in batch)
                    break
                delay = self._retry.backoff(attempt)
                if retry_after is not None:
                    delay = max(delay, retry_after)
                self._wait(min(delay, remaining))
        return done

    def _acknowledge(self, batch: list[Row], response: Response) -> None:
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
            counts[field] = value if isinstance(value, int) and not isinstance(value, bool) else 0
        if not any(counts.values()) and not rejected:
            counts["accepted"] = len(batch)  # a bare 2xx: the events are committed
        for item in rejected[:3]:
            logger.warning("trialbook: event rejected by the server: %r", item)
        with self._lock:
            self._counts["events_sent"] += len(batch)
            for field, value in counts.items():
                self._counts[field] += value
            self._counts["rejected"] += len(rejected)
        if rejected:
            named = sorted(_indexes(rejected, len(batch)))
            self._drop_rows(
                DropReason.REJECTED, [batch[i] for i in named], uncounted=len(rejected) - len(named)
            )


def _indexes(items: list[Any], size: int) -> set[int]:
    found: set[int] = set()
    for item in items:
        index = item.get("index") if isinstance(item, Mapping) else None
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < size:
            found.add(index)
    return found


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
    return _indexes(items, size)
