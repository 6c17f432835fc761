"""Exceptions of the Trialbook SDK.

The hot path (``Client.assign``, ``Client.track``) never raises: these exceptions exist for the
transport layer and are caught, logged and retried by the background threads.

Exception tree::

    TrialbookError                  base of everything the SDK raises
    └── TransportError              the request did not get an HTTP answer (DNS, refused
                                    connection, reset, timeout); retried with backoff
"""

from __future__ import annotations

__all__ = ["TransportError", "TrialbookError"]


class TrialbookError(Exception):
    """Base class of the SDK's exceptions."""


class TransportError(TrialbookError):
    """A request got no HTTP answer (network failure or timeout)."""
