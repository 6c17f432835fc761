"""Every endpoint × every role: no key → 401, a role the endpoint does not admit → 403.

The matrix is read from the application itself, so every endpoint added later joins it; an
endpoint without a role requirement must be listed in PUBLIC with a reason, or this test fails.
"""

import re

import pytest
from fastapi.routing import APIRoute

from service.deps import required_access
from service.keys.models import Role

# path -> why it needs no API key
PUBLIC = {
    "/healthz": "liveness probe",
}

# What only an admin may do (product.md §10): keys, webhooks (they send data out), and templates
# (the organisation's standard, which an editor would otherwise lower for their own experiment).
ADMIN_ONLY = {
    ("POST", "/v1/keys"),
    ("GET", "/v1/keys"),
    ("DELETE", "/v1/keys/{key_id}"),
    ("POST", "/v1/templates"),
    ("PUT", "/v1/templates/{key}"),
    ("POST", "/v1/webhooks"),
    ("GET", "/v1/webhooks"),
    ("GET", "/v1/webhooks/{webhook_id}"),
    ("PATCH", "/v1/webhooks/{webhook_id}"),
    ("DELETE", "/v1/webhooks/{webhook_id}"),
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"),
}


def _allowed_roles(route: APIRoute) -> frozenset[Role] | None:
    # Every route declares its roles as data (service.auth.Access) in the dependency that checks
    # them; the hot paths that authenticate by hand declare them on their Bearer scheme.
    access = required_access(route)
    return None if access is None else access.roles


def _routes():
    from service.main import create_app
    from service.routing import api_routes

    for path, methods, route in api_routes(create_app()):
        if route.include_in_schema or path in PUBLIC:
            for method in sorted(methods - {"HEAD", "OPTIONS"}):
                yield method, path, route


ROUTES = list(_routes())
assert len(ROUTES) > 20


@pytest.mark.parametrize(
    ("method", "template", "route"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES]
)
def test_every_endpoint_requires_a_key_with_the_right_role(client, keys, method, template, route):
    allowed = _allowed_roles(route)
    if allowed is None:
        assert template in PUBLIC, (
            f"{method} {template} has no role requirement: add require(...) or list it in PUBLIC"
        )
        return
    path = re.sub(r"\{[^}]+\}", "1", template)
    r = client.request(method, path)
    assert r.status_code == 401, (method, path, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    for role in Role:
        r = client.request(method, path, headers=keys[role.value])
        if role in allowed:
            assert r.status_code not in (401, 403), (method, path, role, r.text)
        else:
            assert r.status_code == 403, (method, path, role, r.status_code, r.text)


def test_admin_only_endpoints_admit_no_other_role():
    served = {(method, path): route for method, path, route in ROUTES}
    assert served.keys() >= ADMIN_ONLY, sorted(ADMIN_ONLY - served.keys())
    for method, path in sorted(ADMIN_ONLY):
        assert _allowed_roles(served[(method, path)]) == {Role.admin}, (method, path)
    # Every other write to a template path is admin only too (a DELETE added later, say).
    for (method, path), route in served.items():
        if path.startswith("/v1/templates") and method != "GET":
            assert _allowed_roles(route) == {Role.admin}, (method, path)
