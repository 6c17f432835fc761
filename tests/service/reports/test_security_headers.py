"""HTML pages send a Content-Security-Policy with no external source and no framing; every
response sends ``X-Content-Type-Options: nosniff``."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import pytest

HTML_PAGES = ["/", "/reports", "/v1/experiments/new-checkout/report"]


def _directives(policy: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *values = part.split()
        out[name] = values
    return out


@pytest.fixture
def report_pages(make_experiment: Any) -> None:
    make_experiment("new-checkout", start=True, title="New <b>checkout</b>")


@pytest.mark.parametrize("path", HTML_PAGES)
def test_html_pages_allow_no_external_source_and_no_framing(client, keys, report_pages, path):
    r = client.get(path, headers=keys["viewer"])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    policy = _directives(r.headers["content-security-policy"])
    assert policy["default-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    # product.md §14: the sign-in, sign-out and share forms post to this server only
    assert policy["form-action"] == ["'self'"]
    assert set(policy) == {"default-src", "style-src", "frame-ancestors", "base-uri", "form-action"}
    # The only source allowed: the page's own inline stylesheets, each by its hash.
    styles = re.findall(r"<style>(.*?)</style>", r.text, flags=re.S)
    assert styles
    hashes = {
        "'sha256-" + base64.b64encode(hashlib.sha256(css.encode()).digest()).decode() + "'"
        for css in styles
    }
    assert set(policy["style-src"]) == hashes
    # ... and nothing the policy would block: no script, inline style attribute or external URL.
    assert not re.search(r"<script|\sstyle=|\ssrc=|<link|<iframe|url\(", r.text, flags=re.I)
    assert not re.search(r"""href=["']?(https?:)?//""", r.text, flags=re.I)


@pytest.mark.parametrize(
    ("path", "role", "status"),
    [
        ("/healthz", None, 200),
        ("/v1/experiments", "viewer", 200),
        ("/v1/experiments/new-checkout/report?format=md", "viewer", 200),
        ("/v1/experiments", None, 401),
        ("/v1/keys", "viewer", 403),
        ("/v1/experiments/nope", "viewer", 404),
        ("/v1/sdk/config", "sdk", 200),
    ],
)
def test_every_response_says_nosniff_and_only_html_gets_the_policy(
    client, keys, report_pages, path, role, status
):
    r = client.get(path, headers=keys[role] if role else None)
    assert r.status_code == status, r.text
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in r.headers


def test_a_refused_oversized_body_says_nosniff_too(client, keys):
    r = client.post(
        "/v1/events", content=b"x", headers=keys["sdk"] | {"content-length": str(10**9)}
    )
    assert r.status_code == 413
    assert r.headers["x-content-type-options"] == "nosniff"
