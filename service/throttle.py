"""Authentication failures throttled per client address.

A client address that presented ``auth_failure_limit`` wrong keys (unknown or revoked) within
``auth_failure_window_seconds`` gets 429 with ``Retry-After`` for every further key it presents,
without that key being looked up, until its oldest failure in the window has aged out: it can then
try one more, so a guesser gets at most ``limit`` answers per window.

Good keys are not slowed, from any client: a key that authenticated from an address keeps working
from it while the address is blocked (an SDK sharing a host or NAT with a misconfigured client
is not cut off). A key the blocked address has not used successfully before is answered 429, even
when it is valid, because checking it would tell a guesser whether the guess is right. Requests
without any key are 401 and do not count (they guess nothing).

The state is per process (each worker counts its own failures) and in memory. The client address
is the one the HTTP server reports: behind a reverse proxy, run uvicorn with
``--forwarded-allow-ips`` so that it is the caller's, not the proxy's.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import deque
from typing import Any

from service.config import get_settings
from service.errors import TooManyRequestsError

# How long a key that authenticated from an address stays trusted there (seconds), and how many
# (address, key) pairs and failing addresses are remembered before the oldest are dropped.
GOOD_KEY_MEMORY_SECONDS = 86_400.0
MAX_GOOD_PAIRS = 100_000
MAX_FAILING_CLIENTS = 50_000


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class AuthThrottle:
    """Per-client counts of authentication failures in a sliding window (one per app)."""

    def __init__(self, limit: int, window_seconds: float) -> None:
        self.limit = limit
        self.window = window_seconds
        self._failures: dict[str, deque[float]] = {}
        self._good: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def check(self, client: str, token: str) -> None:
        """Raise 429 when ``client`` is blocked and ``token`` is not a key it used successfully."""
        if self.limit <= 0:
            return
        failures = self._failures.get(client)
        if failures is None or len(failures) < self.limit:
            return
        now = time.monotonic()
        with self._lock:
            while failures and now - failures[0] >= self.window:
                failures.popleft()
            if len(failures) < self.limit:
                return
            wait = self.window - (now - failures[0])
        seen = self._good.get((client, _digest(token)))
        if seen is not None and now - seen < GOOD_KEY_MEMORY_SECONDS:
            return
        seconds = max(1, math.ceil(wait))
        raise TooManyRequestsError(
            f"Too many authentication failures from this client ({self.limit} within "
            f"{self.window:g} s); try again in {seconds} s with a valid API key.",
            code="too_many_auth_failures",
            headers={"Retry-After": str(seconds)},
        )

    def failed(self, client: str) -> None:
        """Count one wrong key from ``client``."""
        if self.limit <= 0:
            return
        with self._lock:
            failures = self._failures.get(client)
            if failures is None:
                if len(self._failures) >= MAX_FAILING_CLIENTS:
                    self._forget_clients(time.monotonic())
                failures = self._failures[client] = deque(maxlen=self.limit)
            failures.append(time.monotonic())

    def succeeded(self, client: str, token: str) -> None:
        """Remember that ``token`` is a good key from ``client``."""
        if self.limit <= 0:
            return
        if len(self._good) >= MAX_GOOD_PAIRS:
            with self._lock:
                cutoff = time.monotonic() - GOOD_KEY_MEMORY_SECONDS
                self._good = {k: t for k, t in self._good.items() if t > cutoff}
                if len(self._good) >= MAX_GOOD_PAIRS:
                    self._good.clear()
        self._good[(client, _digest(token))] = time.monotonic()

    def _forget_clients(self, now: float) -> None:
        stale = [c for c, f in self._failures.items() if not f or now - f[-1] >= self.window]
        for client in stale:
            del self._failures[client]
        if len(self._failures) >= MAX_FAILING_CLIENTS:
            self._failures.clear()


def throttle_of(app: Any) -> AuthThrottle:
    """The application's throttle, made from the settings at its first use."""
    found: AuthThrottle | None = getattr(app.state, "auth_throttle", None)
    if found is None:
        settings = get_settings()
        found = AuthThrottle(settings.auth_failure_limit, settings.auth_failure_window_seconds)
        app.state.auth_throttle = found
    return found


def client_of(scope: Any) -> str:
    """The client address of a request (its ASGI scope or a Starlette request)."""
    client = scope.get("client") if isinstance(scope, dict) else scope.client
    if client is None:
        return "unknown"
    return str(client[0] if isinstance(client, tuple | list) else client.host)
