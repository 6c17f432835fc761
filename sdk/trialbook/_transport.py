"""HTTP transport: a tiny protocol and its standard-library implementation.

The client talks to the server only through :class:`Transport`, so tests substitute
:class:`MockTransport` (no network) exactly like ``httpx.MockTransport``.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from trialbook.errors import TransportError

__all__ = ["MockTransport", "Request", "Response", "Transport", "UrllibTransport"]


@dataclass(frozen=True)
class Request:
    """An HTTP request as the client builds it.

    Attributes
    ----------
    method : str
        ``GET`` or ``POST``.
    url : str
        The absolute URL.
    headers : Mapping[str, str]
        Request headers.
    body : bytes or None
        The request body.
    """

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None = None


@dataclass(frozen=True)
class Response:
    """An HTTP answer.

    Attributes
    ----------
    status : int
        The status code.
    headers : Mapping[str, str]
        Response headers, names in lower case.
    body : bytes
        The response body.
    """

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


class Transport(Protocol):
    """Sends one request; raises :class:`~trialbook.errors.TransportError` when no HTTP answer."""

    def send(self, request: Request, timeout: float) -> Response:
        """Send ``request`` and return the answer (any status)."""
        ...


class UrllibTransport:
    """The default transport: ``urllib.request`` from the standard library."""

    def send(self, request: Request, timeout: float) -> Response:
        """Send ``request`` with ``urllib``.

        Parameters
        ----------
        request : Request
            What to send.
        timeout : float
            Seconds for the connection and each read.

        Returns
        -------
        Response
            The answer, whatever its status.

        Raises
        ------
        TransportError
            On a network failure or a timeout.
        """
        req = urllib.request.Request(
            request.url, data=request.body, headers=dict(request.headers), method=request.method
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as answer:
                return Response(
                    answer.status,
                    {k.lower(): v for k, v in answer.headers.items()},
                    answer.read(),
                )
        except urllib.error.HTTPError as exc:
            try:
                body = exc.read()
            except Exception:
                body = b""
            headers = {k.lower(): v for k, v in exc.headers.items()} if exc.headers else {}
            return Response(exc.code, headers, body)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise TransportError(f"{request.method} {request.url}: {exc}") from exc


class MockTransport:
    """A transport that calls ``handler(request) -> Response`` instead of the network.

    Parameters
    ----------
    handler : Callable[[Request], Response]
        Returns the answer, or raises :class:`~trialbook.errors.TransportError` to simulate a
        network failure.
    """

    def __init__(self, handler: Callable[[Request], Response]) -> None:
        self.handler = handler

    def send(self, request: Request, timeout: float) -> Response:
        """Return ``handler(request)``.

        Parameters
        ----------
        request : Request
            The request.
        timeout : float
            Ignored.

        Returns
        -------
        Response
            The handler's answer.
        """
        return self.handler(request)
