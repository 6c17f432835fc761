"""One way in (service/auth.py): every route, the SDK fast paths included, authenticates through
``authenticate``; a request without a Bearer key is offered to the app's credential resolvers."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.auth import Principal, bearer_token, fetch_key
from service.keys.models import Role

# One route of each way a key is looked up: the request's session, the events fast path (one
# statement, no session) and the SDK hot path (the key cache with the config version).
PROBES = [
    ("GET", "/v1/experiments", None),
    ("POST", "/v1/events", {"events": []}),
    ("POST", "/v1/assign", {"unit_id": "u"}),
    ("GET", "/v1/sdk/config", None),
]


def _resolver_for(role: Role) -> Any:
    """A resolver of a credential kind of its own (a header standing for a session cookie)."""

    def resolve(conn: Any) -> Principal | None:
        if conn.headers.get("x-test-session") != "good":
            return None
        return Principal(key_id=999, name=f"session-{role.value}", role=role)

    return resolve


@pytest.mark.parametrize(("method", "path", "body"), PROBES, ids=[p[1] for p in PROBES])
def test_a_request_without_a_bearer_key_is_admitted_by_a_credential_resolver(
    app, keys, method, path, body
):
    app.state.credential_resolvers = [_resolver_for(Role.admin)]
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.request(method, path, json=body, headers={"x-test-session": "good"})
        assert r.status_code == 200, r.text
        # Without the credential the resolver finds nothing: still 401 with the usual problem.
        r = c.request(method, path, json=body)
        assert r.status_code == 401
        assert "Authorization: Bearer" in r.json()["detail"]


@pytest.mark.parametrize(("method", "path", "body"), PROBES, ids=[p[1] for p in PROBES])
def test_a_resolved_principal_gets_the_same_role_check_as_a_key(app, keys, method, path, body):
    # viewer may read experiments but is none of the SDK routes' roles; sdk may not read them.
    wrong = Role.sdk if path == "/v1/experiments" else Role.viewer
    app.state.credential_resolvers = [_resolver_for(wrong)]
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.request(method, path, json=body, headers={"x-test-session": "good"})
        assert r.status_code == 403, r.text


def test_a_bearer_key_is_checked_before_any_resolver(app, keys):
    app.state.credential_resolvers = [_resolver_for(Role.admin)]
    with TestClient(app, raise_server_exceptions=False) as c:
        headers = {"Authorization": "Bearer tb_wrong", "x-test-session": "good"}
        assert c.get("/v1/experiments", headers=headers).status_code == 401


def test_the_one_statement_lookup_finds_active_keys_and_refuses_revoked_ones(client, keys, admin):
    token = keys["viewer"]["Authorization"].removeprefix("Bearer ")
    principal, extra = fetch_key(token, also="(SELECT count(*) FROM api_key)")
    assert principal is not None and principal.role is Role.viewer
    assert extra == (len(Role),)
    assert fetch_key("tb_unknown") == (None, ())
    listed = client.get("/v1/keys", headers=admin).json()["items"]
    viewer_id = next(k["id"] for k in listed if k["role"] == "viewer")
    assert client.delete(f"/v1/keys/{viewer_id}", headers=admin).status_code == 200
    assert fetch_key(token)[0] is None


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer   ", None),
        (None, None),
    ],
)
def test_bearer_token_reads_only_the_bearer_scheme(header, token):
    assert bearer_token(header) == token
