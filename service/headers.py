"""Security headers: ``nosniff`` on every response, a strict Content-Security-Policy on HTML.

The HTML pages (``/``, ``/reports``, a report) load nothing: their one stylesheet is inline and
their charts are inline SVG. So the policy allows no source at all (``default-src 'none'``)
except that stylesheet, by its SHA-256 hash (an injected ``<style>`` or ``style=`` would not
apply), and no page may frame them (``frame-ancestors 'none'``: no clickjacking).
"""

from __future__ import annotations

import base64
import hashlib

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.reports.render import CSS


def style_source(css: str) -> str:
    """The CSP source expression that admits exactly the inline stylesheet ``css``."""
    digest = hashlib.sha256(css.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        f"style-src {style_source(CSS)}",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    )
)


class SecurityHeadersMiddleware:
    """Add ``X-Content-Type-Options: nosniff`` to every HTTP response, and the CSP and
    ``X-Frame-Options: DENY`` (for browsers without ``frame-ancestors``) to HTML ones."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                if headers.get("content-type", "").startswith("text/html"):
                    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
                    headers["X-Frame-Options"] = "DENY"
            await send(message)

        await self.app(scope, receive, send_with_headers)
