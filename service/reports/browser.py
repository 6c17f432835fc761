"""A small client for headless Chromium over the DevTools protocol (CDP).

The report's PDF export, the screenshot script (``docs/screenshots.py``) and the browser tests
drive Debian's ``chromium`` through it: one browser process per :class:`Chromium`, pages opened
as targets over one websocket, commands answered synchronously. Only what they need: navigate
and wait for the load, evaluate JavaScript (DevTools evaluation is not subject to the page's
Content-Security-Policy, the page itself has no script), set the viewport and the media type,
read cookies, take a screenshot, print to PDF.

Errors: :class:`BrowserError` (a ``RuntimeError``) when Chromium cannot start, a command fails
or an answer does not come within the timeout.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.sync.client import ClientConnection, connect

__all__ = ["A4", "LETTER", "BrowserError", "Chromium", "Page", "find_chromium"]

# Paper sizes in inches (what Page.printToPDF takes).
A4 = (8.27, 11.69)
LETTER = (8.5, 11.0)


class BrowserError(RuntimeError):
    """Chromium failed to start, or a DevTools command failed or timed out."""


def find_chromium() -> str | None:
    """The path of a Chromium executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Chromium:
    """A headless Chromium process and its DevTools websocket (use as a context manager)."""

    def __init__(self, executable: str | None = None, *, timeout: float = 30.0) -> None:
        exe = executable or find_chromium()
        if exe is None:
            raise BrowserError("chromium is not installed (Debian package `chromium`)")
        self.timeout = timeout
        self._dir = tempfile.TemporaryDirectory(prefix="tb-chromium-")
        self._proc = subprocess.Popen(
            [
                exe,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--font-render-hinting=none",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={self._dir.name}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: close() ends its helpers too
        )
        port_file = Path(self._dir.name) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not port_file.exists() or len(port_file.read_text().split()) < 2:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise BrowserError("chromium did not open its DevTools port")
            time.sleep(0.05)
        port, path = port_file.read_text().split()[:2]
        # entered as a context manager (closed in close()): websockets warns otherwise
        self._ws: ClientConnection = connect(
            f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=timeout
        ).__enter__()
        self._next = 0
        self._events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> Any:
        """Send one command and return its result (events that arrive meanwhile are dropped)."""
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._ws.send(json.dumps(msg))
        return self._wait(lambda m: m.get("id") == self._next, f"{method}")["result"]

    def _wait(self, match: Any, what: str, timeout: float | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no answer to {what} within the timeout")
            try:
                m = json.loads(self._ws.recv(timeout=left))
            except TimeoutError as exc:
                raise BrowserError(f"no answer to {what} within the timeout") from exc
            if "error" in m and m.get("id") == self._next:
                raise BrowserError(f"{what}: {m['error'].get('message')}")
            if match(m):
                return dict(m)
            if "method" in m:
                self._events.append(m)

    def clear_events(self) -> None:
        self._events.clear()

    def wait_event(self, method: str, session: str, timeout: float | None = None) -> None:
        for i, m in enumerate(self._events):
            if m.get("method") == method and m.get("sessionId") == session:
                del self._events[: i + 1]
                return
        self._wait(
            lambda m: m.get("method") == method and m.get("sessionId") == session,
            method,
            timeout,
        )

    def new_page(self, width: int = 1280, height: int = 900, *, isolated: bool = False) -> Page:
        """A new tab with the given viewport (CSS pixels); ``isolated``: in a context of its own
        (no cookies shared with the other tabs, like a private window)."""
        params: dict[str, Any] = {"url": "about:blank"}
        if isolated:
            params["browserContextId"] = self.send("Target.createBrowserContext")[
                "browserContextId"
            ]
        target = self.send("Target.createTarget", params)["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, session, target)
        page.send("Page.enable")
        page.send("Network.enable")
        page.viewport(width, height)
        return page

    def close(self) -> None:
        ws = getattr(self, "_ws", None)
        if ws is not None:
            with contextlib.suppress(Exception):  # the browser may be gone already
                ws.close()
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        # Chromium's helper processes (renderer, crashpad) may outlive the browser a moment and
        # still write into the profile: end the group, then remove the profile, retrying while a
        # straggler's last files appear ("Directory not empty" once in CI).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        for attempt in range(20):
            try:
                shutil.rmtree(self._dir.name)
                break
            except FileNotFoundError:
                break
            except OSError:
                if attempt == 19:
                    raise
                time.sleep(0.1)
        with contextlib.suppress(OSError):
            self._dir.cleanup()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Page:
    """One tab of a :class:`Chromium`."""

    def __init__(self, browser: Chromium, session: str, target: str) -> None:
        self.browser, self.session, self.target = browser, session, target

    def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.browser.send(method, params, self.session)

    def viewport(self, width: int, height: int) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def media(self, media: str) -> None:
        """Emulate a CSS media type (``print`` or ``""`` for screen)."""
        self.send("Emulation.setEmulatedMedia", {"media": media})

    def goto(self, url: str) -> dict[str, Any]:
        """Navigate and wait for the load event; returns the HTTP status and the final URL."""
        self.browser.clear_events()
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"navigation to {url} failed: {result['errorText']}")
        self.browser.wait_event("Page.loadEventFired", self.session)
        return {"url": self.evaluate("location.href")}

    def submit(self, expression: str) -> None:
        """Run ``expression`` (which submits a form or follows a link) and wait for the load."""
        self.browser.clear_events()
        self.evaluate(expression)
        self.browser.wait_event("Page.loadEventFired", self.session)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        got = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in got:
            raise BrowserError(f"{expression[:80]}: {got['exceptionDetails'].get('text')}")
        return got["result"].get("value")

    def cookies(self) -> list[dict[str, Any]]:
        return list(self.send("Network.getCookies")["cookies"])

    def screenshot(self, path: Path, *, full_page: bool = False) -> None:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            w = self.evaluate("document.documentElement.scrollWidth")
            h = self.evaluate("document.documentElement.scrollHeight")
            params |= {"clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}}
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", params)["data"]
        path.write_bytes(base64.b64decode(data))

    def pdf(self, paper: tuple[float, float] = A4, margin_in: float = 0.0) -> bytes:
        """The page printed to PDF (the page's own ``@page`` margins apply with margin 0)."""
        data = self.send(
            "Page.printToPDF",
            {
                "paperWidth": paper[0],
                "paperHeight": paper[1],
                "marginTop": margin_in,
                "marginBottom": margin_in,
                "marginLeft": margin_in,
                "marginRight": margin_in,
                "printBackground": True,
                "preferCSSPageSize": False,
            },
        )["data"]
        return base64.b64decode(data)

    def close(self) -> None:
        self.browser.send("Target.closeTarget", {"targetId": self.target})
