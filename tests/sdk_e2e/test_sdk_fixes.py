"""Regression tests of SDK bugs found by the end-to-end tests (no server: a mock transport).

``wait_until_ready()`` returned as soon as the fetched config was installed, before the client had
recorded the response's ``ETag`` and counted the fetch, so a ``refresh()`` right after it (the
live refresh test does exactly that) could go out without ``If-None-Match`` and download the
whole config again.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from trialbook import Client
from trialbook.testing import MockTransport, Request, Response

CONFIG: dict[str, Any] = {
    "hash_version": 1,
    "layers": {},
    "experiments": {
        "exp": {
            "key": "exp",
            "status": "running",
            "seed": "s33d",
            "phase": 1,
            "randomization_unit": "user_id",
            "variants": [
                {"key": "control", "weight": 0.5, "is_control": True},
                {"key": "treatment", "weight": 0.5, "is_control": False},
            ],
            "traffic_fraction": 1.0,
            "targeting": None,
            "overrides": {},
            "layer": None,
            "layer_range": None,
        }
    },
}
ETAG = '"v1"'


class SlowCountingClient(Client):
    """Counting the config fetch takes a while, which widens the window the bug lived in."""

    def _count(self, name: str, n: int = 1) -> None:
        if name == "config_fetches":
            threading.Event().wait(0.3)
        super()._count(name, n)


def test_a_refresh_right_after_wait_until_ready_sends_the_etag_and_gets_304() -> None:
    seen: list[str | None] = []

    def handler(request: Request) -> Response:
        if request.method == "GET":
            seen.append(request.headers.get("If-None-Match"))
            if request.headers.get("If-None-Match") == ETAG:
                return Response(304, {"etag": ETAG})
            return Response(200, {"etag": ETAG}, json.dumps(CONFIG).encode())
        return Response(200, {}, b'{"accepted":0,"duplicates":0,"conflicts":0,"rejected":[]}')

    client = SlowCountingClient(
        "http://trialbook.test", "k", transport=MockTransport(handler), refresh_interval=600
    )
    try:
        assert client.wait_until_ready(5)
        assert client.stats().config_fetches == 1
        assert client.refresh() is False
        assert seen == [None, ETAG]
        assert client.stats().config_not_modified == 1
    finally:
        client.close()
