"""Event payloads: hand-made UUIDv7 ids and ISO-8601 UTC timestamps (fast, allocation-light)."""

from __future__ import annotations

import os
import threading
import time
import uuid

__all__ = ["iso_timestamp", "uuid7", "uuid7_str"]

_lock = threading.Lock()
_last_ms = -1
_counter = 0
_MASK_48 = (1 << 48) - 1
_MASK_62 = (1 << 62) - 1


def _uuid7_int(unix_ms: int, rand: int) -> int:
    """Build the 128-bit value from a timestamp and 80 random bits (see :func:`uuid7`)."""
    global _last_ms, _counter
    with _lock:
        if unix_ms <= _last_ms:
            unix_ms = _last_ms
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                unix_ms += 1
                _counter = rand >> 69 & 0x7FF
        else:
            _counter = rand >> 69 & 0x7FF
        _last_ms = unix_ms
        rand_a = _counter
    return (unix_ms & _MASK_48) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | (rand & _MASK_62)


def uuid7(unix_ms: int) -> uuid.UUID:
    """Return a UUID version 7 (RFC 9562 §5.7) for the given Unix time in milliseconds.

    Layout: 48-bit big-endian ``unix_ms`` | version ``0111`` | 12-bit ``rand_a`` | variant ``10``
    | 62 random bits (``os.urandom``). Within one millisecond ``rand_a`` is a counter
    (RFC 9562 §6.2, method 1) started at a random value below 2048, so ids made in one process
    sort in creation order; if ``unix_ms`` goes backwards the last timestamp is reused.

    Parameters
    ----------
    unix_ms : int
        Milliseconds since the Unix epoch.

    Returns
    -------
    uuid.UUID
        A version-7, RFC 4122-variant UUID.
    """
    return uuid.UUID(int=_uuid7_int(unix_ms, int.from_bytes(os.urandom(10), "big")))


def uuid7_str(unix_ms: int, rand: int) -> str:
    """Return ``str(uuid7(unix_ms))`` with caller-supplied randomness (batched ``os.urandom``).

    Parameters
    ----------
    unix_ms : int
        Milliseconds since the Unix epoch.
    rand : int
        80 random bits.

    Returns
    -------
    str
        The canonical 36-character form.
    """
    h = f"{_uuid7_int(unix_ms, rand):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# (second, formatted second): one reference, swapped atomically, so threads never mix the two.
_second_cache: tuple[int, str] = (-1, "")


def iso_timestamp(epoch_seconds: float) -> str:
    """Format a Unix time as ISO-8601 UTC with microseconds and a ``Z`` suffix.

    Parameters
    ----------
    epoch_seconds : float
        Seconds since the Unix epoch.

    Returns
    -------
    str
        For example ``"2026-11-26T15:33:46.123456Z"`` (microseconds truncated).
    """
    global _second_cache
    second = int(epoch_seconds // 1)
    micros = int((epoch_seconds - second) * 1_000_000)
    cached_second, text = _second_cache
    if second != cached_second:  # events come in bursts within one second: format it once
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_cache = (second, text)
    return f"{text}.{micros:06d}Z"
