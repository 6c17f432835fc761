"""Wrong API keys are throttled per client address (429 + Retry-After), good keys are not."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

LIMIT = 5
WRONG = {"Authorization": "Bearer tb_not-a-key-at-all"}
# One route of each way a key is checked: the dependency (service/deps.py), the events fast path
# (events/routes.sdk_principal) and the SDK hot path (assignment/routes.admit).
PROBES = [
    ("GET", "/v1/experiments", None),
    ("POST", "/v1/events", {"events": []}),
    ("POST", "/v1/assign", {"unit_id": "u"}),
    ("GET", "/v1/sdk/config", None),
    ("POST", "/ofrep/v1/evaluate/flags", {"context": {"targetingKey": "u"}}),
]


@pytest.fixture
def throttled_app(engine: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from service.config import get_settings
    from service.main import create_app

    monkeypatch.setenv("TRIALBOOK_AUTH_FAILURE_LIMIT", str(LIMIT))
    get_settings.cache_clear()
    yield create_app()
    monkeypatch.delenv("TRIALBOOK_AUTH_FAILURE_LIMIT")
    get_settings.cache_clear()


def _client(app: Any, address: str) -> TestClient:
    return TestClient(app, raise_server_exceptions=False, client=(address, 40000))


def _call(c: TestClient, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    return c.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), PROBES, ids=[p[1] for p in PROBES])
def test_wrong_keys_beyond_the_limit_get_429_with_retry_after(
    throttled_app, keys, method, path, body
):
    with _client(throttled_app, "203.0.113.7") as attacker:
        for _ in range(LIMIT):
            assert _call(attacker, method, path, body, WRONG).status_code == 401
        r = _call(attacker, method, path, body, WRONG)
        assert r.status_code == 429, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "too_many_auth_failures"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        # A valid key this client never used is not even checked: the answer would tell a
        # guesser that the guess was right.
        assert _call(attacker, method, path, body, keys["admin"]).status_code == 429
    with _client(throttled_app, "198.51.100.9") as other:
        assert _call(other, method, path, body, WRONG).status_code == 401
        assert _call(other, method, path, body, keys["admin"]).status_code not in (401, 429)


def test_a_thousand_wrong_keys_get_only_limit_answers(throttled_app):
    statuses: dict[int, int] = {}
    with _client(throttled_app, "203.0.113.8") as attacker:
        for i in range(1000):
            headers = {"Authorization": f"Bearer tb_guess_{i}"}
            status = attacker.get("/v1/sdk/config", headers=headers).status_code
            statuses[status] = statuses.get(status, 0) + 1
    assert statuses == {401: LIMIT, 429: 1000 - LIMIT}


def test_good_keys_of_a_blocked_client_keep_working(throttled_app, keys):
    with _client(throttled_app, "192.0.2.10") as shared:
        assert shared.get("/v1/sdk/config", headers=keys["sdk"]).status_code == 200
        assert shared.get("/v1/experiments", headers=keys["editor"]).status_code == 200
        # A misconfigured client on the same address sends a revoked or wrong key ...
        for _ in range(LIMIT + 3):
            shared.post("/v1/events", json={"events": []}, headers=WRONG)
        assert shared.post("/v1/events", json={"events": []}, headers=WRONG).status_code == 429
        # ... and the keys that worked from it still do, on every path.
        assert shared.get("/v1/sdk/config", headers=keys["sdk"]).status_code == 200
        r = shared.post("/v1/assign", json={"unit_id": "u"}, headers=keys["sdk"])
        assert r.status_code == 200
        assert (
            shared.post("/v1/events", json={"events": []}, headers=keys["sdk"]).status_code == 200
        )
        assert shared.get("/v1/experiments", headers=keys["editor"]).status_code == 200


def test_requests_without_a_key_and_wrong_roles_are_not_failures(throttled_app, keys):
    with _client(throttled_app, "192.0.2.11") as c:
        for _ in range(LIMIT * 4):
            assert c.get("/v1/experiments").status_code == 401
            assert c.get("/v1/keys", headers=keys["viewer"]).status_code == 403
        assert c.get("/v1/experiments", headers=WRONG).status_code == 401


def test_a_revoked_key_counts_as_a_failure(throttled_app, admin):
    with _client(throttled_app, "192.0.2.12") as c:
        created = c.post("/v1/keys", json={"name": "old", "role": "sdk"}, headers=admin).json()
        old = {"Authorization": f"Bearer {created['key']}"}
        assert c.delete(f"/v1/keys/{created['id']}", headers=admin).status_code == 200
        for _ in range(LIMIT):
            assert c.get("/v1/sdk/config", headers=old).status_code == 401
        assert c.get("/v1/sdk/config", headers=old).status_code == 429
        assert c.get("/v1/keys", headers=admin).status_code == 200


def test_a_limit_of_zero_turns_the_throttle_off(engine, keys, monkeypatch):
    from service.config import get_settings
    from service.main import create_app

    monkeypatch.setenv("TRIALBOOK_AUTH_FAILURE_LIMIT", "0")
    get_settings.cache_clear()
    try:
        with _client(create_app(), "203.0.113.9") as c:
            assert {c.get("/v1/experiments", headers=WRONG).status_code for _ in range(50)} == {401}
    finally:
        monkeypatch.delenv("TRIALBOOK_AUTH_FAILURE_LIMIT")
        get_settings.cache_clear()


def test_the_window_slides(monkeypatch):
    # The throttle's rule on a clock the test moves: one more attempt per failure that ages out.
    from service import throttle as module
    from service.throttle import AuthThrottle

    now = [1000.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: now[0])
    t = AuthThrottle(limit=3, window_seconds=60)
    for _ in range(3):
        t.check("c", "guess")
        t.failed("c")
        now[0] += 10
    with pytest.raises(module.TooManyRequestsError) as blocked:
        t.check("c", "guess")
    assert blocked.value.headers == {"Retry-After": "30"}  # the first failure ages out at 1060
    now[0] = 1060.0
    t.check("c", "guess")  # one more attempt
    t.failed("c")
    with pytest.raises(module.TooManyRequestsError):
        t.check("c", "guess")
    t.check("other-client", "guess")
