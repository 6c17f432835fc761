"""Webhook URLs go to public addresses only: refused at registration and again at delivery.

No test here sends traffic anywhere but 127.0.0.1: the refusals at registration contact nothing
(literal addresses are not resolved, private names are refused without a lookup, ``localhost``
comes from the hosts file), and the delivery refused is one to ``localhost``, where a receiver on
127.0.0.1 checks that nothing arrived.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

REFUSED_URLS = [
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
    "http://127.0.0.1:5432/",  # loopback: a database port
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/admin",
    "http://100.64.0.1/",  # shared address space (carrier-grade NAT)
    "http://[::1]/",
    "http://[::1]:8080/x",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://224.0.0.1/",  # multicast
    "http://[ff02::1]/",
    "http://240.0.0.1/",  # reserved
    "http://[fe80::1]/",  # link-local IPv6
    "http://[fc00::1]/",  # unique local IPv6
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "http://[::ffff:a9fe:a9fe]/",
    "http://[::ffff:8.8.8.8]/",
    "http://[2002:7f00:1::1]/",  # 6to4 of 127.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://2130706433/",  # 127.0.0.1 as one integer
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://0x8.0x8.0x8.0x8/",  # even a public address, when written ambiguously
    "https://metadata.google.internal/computeMetadata/v1/",
    "http://metadata/",
    "http://printer.local/",
    "http://app.localhost/",
    "http://localhost:8080/",
    "http://LOCALHOST./",
    "http://user:pass@10.0.0.1/",
]


@pytest.fixture
def private_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.config import get_settings

    monkeypatch.delenv("TRIALBOOK_WEBHOOK_ALLOW_PRIVATE", raising=False)
    get_settings.cache_clear()


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_registration_refuses_a_non_public_address(client, admin, private_refused, url):
    r = client.post("/v1/webhooks", json={"url": url, "event_types": ["alert.srm"]}, headers=admin)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in r.json()["errors"]] == ["url"]
    message = r.json()["errors"][0]["message"]
    assert "public addresses only" in message or "not a valid URL" in message, message
    assert client.get("/v1/webhooks", headers=admin).json()["items"] == []


def test_a_patch_to_a_non_public_address_is_refused_and_keeps_the_url(
    client, admin, private_refused
):
    # A public literal address is accepted without any lookup; inactive, so nothing is sent.
    body = {"url": "https://8.8.8.8/hooks", "event_types": ["alert.srm"], "active": False}
    r = client.post("/v1/webhooks", json=body, headers=admin)
    assert r.status_code == 201, r.text
    hook = r.json()
    for url in ("http://169.254.169.254/", "http://[::ffff:10.0.0.1]/", "http://2130706433/"):
        r = client.patch(f"/v1/webhooks/{hook['id']}", json={"url": url}, headers=admin)
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == "url"
    assert client.get(f"/v1/webhooks/{hook['id']}", headers=admin).json()["url"] == body["url"]


def test_public_addresses_are_accepted(private_refused):
    from service.webhooks import addresses

    for url, address in (
        ("https://8.8.8.8/x", "8.8.8.8"),
        ("http://[2001:4860:4860::8888]:8443/x", "2001:4860:4860::8888"),
    ):
        assert addresses.resolve(url).address == address


def test_a_delivery_connects_to_the_address_it_checked():
    from service.webhooks import addresses

    target = addresses.Target(
        url=addresses.httpx.URL("https://hooks.example.com:8443/in?x=1"), address="93.184.215.14"
    )
    url, headers, extensions = addresses.request_for(target)
    assert str(url) == "https://93.184.215.14:8443/in?x=1"
    assert headers == {"host": "hooks.example.com:8443"}
    assert extensions == {"sni_hostname": "hooks.example.com"}
    six = addresses.Target(url=addresses.httpx.URL("http://h.example/"), address="2001:db8::1")
    url, headers, extensions = addresses.request_for(six)
    assert (url.host, headers, extensions) == ("2001:db8::1", {"host": "h.example"}, {})


def test_the_setting_allows_private_addresses(client, admin, allow_private_webhooks):
    body = {"url": "http://127.0.0.1:9/x", "event_types": ["alert.srm"], "active": False}
    assert client.post("/v1/webhooks", json=body, headers=admin).status_code == 201


def test_a_delivery_to_a_name_that_now_resolves_to_loopback_is_refused_and_logged(
    client, admin, receiver, make_experiment, monkeypatch
):
    from service.config import get_settings

    # Registered while private addresses were allowed (or while the name resolved elsewhere) ...
    url = receiver.url.replace("127.0.0.1", "localhost")
    body = {"url": url, "event_types": ["experiment.started"]}
    r = client.post("/v1/webhooks", json=body, headers=admin)
    assert r.status_code == 201, r.text
    hook = r.json()
    # ... and delivered when they are not: `localhost` resolves to 127.0.0.1 at delivery.
    monkeypatch.delenv("TRIALBOOK_WEBHOOK_ALLOW_PRIVATE")
    get_settings.cache_clear()
    make_experiment("rebound", start=True)
    deadline = time.monotonic() + 15
    log: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        log = client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=admin).json()["items"]
        if log and log[0]["status"] != "pending":
            break
        time.sleep(0.05)
    assert len(log) == 1
    assert log[0]["status"] == "failed" and log[0]["attempts"] == 1  # not retried
    assert log[0]["response_status"] is None
    assert log[0]["last_error"].startswith("refused: 'localhost' resolves to 127.0.0.1")
    assert receiver.attempts == []
