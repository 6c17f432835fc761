"""Webhooks through HTTP against a real receiver verifying with the `standardwebhooks` package."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

EVENTS = ["experiment.started", "experiment.stopped", "experiment.concluded", "alert.srm"]


def subscribe(client, admin, receiver, events=EVENTS):
    r = client.post(
        "/v1/webhooks", json={"url": receiver.url, "event_types": events}, headers=admin
    )
    assert r.status_code == 201, r.text
    body = r.json()
    receiver.secret = body["secret"]
    return body


def deliveries(client, admin, webhook_id):
    r = client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=admin)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def wait_deliveries(client, admin, webhook_id, predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = deliveries(client, admin, webhook_id)
        if predicate(items):
            return items
        time.sleep(0.05)
    raise AssertionError(f"delivery log never matched: {items}")


def test_signature_matches_the_reference_implementation():
    from service.webhooks.service import generate_secret, sign

    secret = generate_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    body = '{"type":"experiment.started","data":{"experiment":"x"}}'
    ts = 1_700_000_000
    reference = Webhook(secret).sign("msg_1", datetime.fromtimestamp(ts, UTC), body)
    assert sign(secret, "msg_1", ts, body) == reference


def test_lifecycle_events_are_delivered_signed(client, admin, receiver, make_experiment):
    hook = subscribe(client, admin, receiver)
    assert "secret" not in client.get(f"/v1/webhooks/{hook['id']}", headers=admin).json()
    make_experiment("hooked", start=True)
    receiver.wait_for(lambda: len(receiver.verified) == 1)
    client.post("/v1/experiments/hooked/pause", headers=admin)  # not subscribed
    client.post("/v1/experiments/hooked/stop", headers=admin)
    client.post(
        "/v1/experiments/hooked/conclude",
        json={"decision": "roll_back", "rationale": "no lift"},
        headers=admin,
    )
    receiver.wait_for(lambda: len(receiver.verified) == 3)
    assert not receiver.rejected
    types = [m["payload"]["type"] for m in receiver.verified]
    assert types == ["experiment.started", "experiment.stopped", "experiment.concluded"]
    concluded = receiver.verified[2]["payload"]["data"]
    assert concluded["experiment"] == "hooked" and concluded["decision"]["decision"] == "roll_back"
    log = wait_deliveries(
        client,
        admin,
        hook["id"],
        lambda xs: len(xs) == 3 and all(x["status"] == "succeeded" for x in xs),
    )
    assert [x["event_type"] for x in log] == types[::-1]  # newest first
    assert all(x["attempts"] == 1 and x["response_status"] == 204 for x in log)
    ids = {m["headers"]["webhook-id"] for m in receiver.verified}
    assert ids == {x["message_id"] for x in log}


def test_failed_attempts_are_retried_with_the_same_id(
    client, admin, receiver, make_experiment, fast_retries
):
    hook = subscribe(client, admin, receiver)
    receiver.script = [500, 503]
    make_experiment("retried", start=True)
    log = wait_deliveries(
        client, admin, hook["id"], lambda xs: xs and xs[0]["status"] == "succeeded"
    )
    assert log[0]["attempts"] == 3
    assert len({a["webhook-id"] for a in receiver.attempts}) == 1
    assert len(receiver.verified) == 1


def test_delivery_gives_up_after_the_schedule(
    client, admin, receiver, make_experiment, fast_retries
):
    hook = subscribe(client, admin, receiver)
    receiver.script = [500] * 10
    make_experiment("doomed", start=True)
    log = wait_deliveries(client, admin, hook["id"], lambda xs: xs and xs[0]["status"] == "failed")
    assert log[0]["attempts"] == 4  # the first attempt and three retries
    assert log[0]["last_error"] == "HTTP 500" and log[0]["next_attempt_at"] is None
    failed = client.get(f"/v1/webhooks/{hook['id']}/deliveries?status=failed", headers=admin)
    assert failed.json()["total"] == 1


def test_a_slow_receiver_never_blocks_the_api(client, admin, receiver, make_experiment):
    subscribe(client, admin, receiver)
    receiver.delay = 1.5
    make_experiment("slowpoke")
    t0 = time.monotonic()
    r = client.post("/v1/experiments/slowpoke/start", headers=admin)
    elapsed = time.monotonic() - t0
    assert r.status_code == 200
    assert elapsed < 1.0, elapsed
    receiver.wait_for(lambda: len(receiver.verified) == 1)


def test_an_unreachable_receiver_is_logged(
    client, admin, make_experiment, fast_retries, allow_private_webhooks
):
    r = client.post(
        "/v1/webhooks",
        json={"url": "http://127.0.0.1:9/x", "event_types": ["experiment.started"]},
        headers=admin,
    )
    hook = r.json()
    make_experiment("nowhere", start=True)
    log = wait_deliveries(client, admin, hook["id"], lambda xs: xs and xs[0]["status"] == "failed")
    assert log[0]["response_status"] is None and "Error" in log[0]["last_error"]


def test_only_subscribed_and_active_hooks_get_messages(client, admin, receiver, make_experiment):
    hook = subscribe(client, admin, receiver, events=["experiment.stopped"])
    make_experiment("quiet", start=True)
    r = client.patch(f"/v1/webhooks/{hook['id']}", json={"active": False}, headers=admin)
    assert r.status_code == 200 and r.json()["active"] is False
    client.post("/v1/experiments/quiet/stop", headers=admin)
    assert deliveries(client, admin, hook["id"]) == []
    r = client.patch(
        f"/v1/webhooks/{hook['id']}",
        json={"active": True, "event_types": ["experiment.concluded"]},
        headers=admin,
    )
    assert r.json()["event_types"] == ["experiment.concluded"]
    client.post(
        "/v1/experiments/quiet/conclude",
        json={"decision": "inconclusive", "rationale": "flat"},
        headers=admin,
    )
    receiver.wait_for(lambda: len(receiver.verified) == 1)
    assert receiver.verified[0]["payload"]["type"] == "experiment.concluded"


def test_webhook_crud_and_role_matrix(client, keys, admin, receiver):
    body = {"url": receiver.url, "event_types": ["alert.srm"]}
    assert client.post("/v1/webhooks", json=body).status_code == 401
    for role in ("editor", "viewer", "sdk"):
        assert client.post("/v1/webhooks", json=body, headers=keys[role]).status_code == 403
        assert client.get("/v1/webhooks", headers=keys[role]).status_code == 403
    hook = client.post("/v1/webhooks", json=body, headers=admin).json()
    for role in ("editor", "viewer", "sdk"):
        r = client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=keys[role])
        assert r.status_code == 403
    assert [h["id"] for h in client.get("/v1/webhooks", headers=admin).json()["items"]] == [
        hook["id"]
    ]
    assert client.delete(f"/v1/webhooks/{hook['id']}", headers=admin).status_code == 204
    assert client.get(f"/v1/webhooks/{hook['id']}", headers=admin).status_code == 404
    assert client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=admin).status_code == 404


def test_webhook_requests_are_validated(client, admin):
    for body in (
        {"url": "ftp://example.com/x", "event_types": ["alert.srm"]},
        {"url": "https://example.com/x", "event_types": ["nope"]},
        {"url": "https://example.com/x", "event_types": []},
        {"url": "https://example.com/x", "event_types": ["alert.srm"], "secret": "mine"},
    ):
        assert client.post("/v1/webhooks", json=body, headers=admin).status_code == 422, body
