"""Every error is RFC 9457 problem+json."""

import logging

import pytest
from fastapi.testclient import TestClient

PROBLEM = "application/problem+json"


def assert_problem(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status
    assert body["type"].startswith("https://")
    assert body["title"] and body["code"]
    return body


def test_missing_key_is_a_401_problem(client):
    body = assert_problem(client.get("/v1/metrics"), 401)
    assert "Bearer" in body["detail"]


def test_unknown_key_is_a_401_problem(client, keys):
    assert_problem(client.get("/v1/metrics", headers={"Authorization": "Bearer tb_nope"}), 401)


def test_wrong_role_is_a_403_problem(client, keys):
    body = assert_problem(client.get("/v1/keys", headers=keys["editor"]), 403)
    assert "editor" in body["detail"]


def test_unknown_resource_is_a_404_problem(client, admin):
    body = assert_problem(client.get("/v1/experiments/does-not-exist", headers=admin), 404)
    assert "does-not-exist" in body["detail"]


def test_unknown_route_is_a_404_problem(client, admin):
    assert_problem(client.get("/v1/nowhere", headers=admin), 404)


def test_validation_error_lists_every_field(client, admin):
    r = client.post("/v1/metrics", json={"key": "X", "type": "histogram"}, headers=admin)
    body = assert_problem(r, 422)
    fields = {e["field"] for e in body["errors"]}
    assert {"key", "name", "type"} <= fields
    assert all(e["message"] for e in body["errors"])


def test_malformed_json_is_a_400_problem(client, admin):
    r = client.post(
        "/v1/metrics",
        content=b'{"key": "abc", ',
        headers={**admin, "Content-Type": "application/json"},
    )
    body = assert_problem(r, 400)
    assert body["code"] == "malformed_json"


def test_oversize_body_is_a_413_problem(client, admin):
    big = b'{"key": "' + b"a" * (6 * 1024 * 1024) + b'"}'
    r = client.post(
        "/v1/metrics", content=big, headers={**admin, "Content-Type": "application/json"}
    )
    assert_problem(r, 413)


def test_oversize_chunked_body_without_length_is_a_413_problem(client, admin):
    def chunks():
        for _ in range(6):
            yield b"x" * (1024 * 1024)

    r = client.post(
        "/v1/metrics", content=chunks(), headers={**admin, "Content-Type": "application/json"}
    )
    assert_problem(r, 413)


def test_unexpected_error_is_a_500_without_internals(app, admin, caplog):
    @app.get("/boom-for-test")
    def boom() -> None:
        raise RuntimeError("secret internal detail /etc/passwd")

    with TestClient(app, raise_server_exceptions=False) as c, caplog.at_level(logging.ERROR):
        r = c.get("/boom-for-test")
    body = assert_problem(r, 500)
    assert "secret" not in r.text and "Traceback" not in r.text
    assert body["code"] == "internal_error"
    assert any("boom-for-test" in rec.getMessage() for rec in caplog.records)


def test_method_not_allowed_is_a_problem(client, admin):
    assert_problem(client.put("/v1/metrics", headers=admin), 405)


@pytest.mark.parametrize("value", [False, "0.05"])
def test_numbers_are_not_coerced_from_booleans_or_strings(
    client, admin, make_metric, bodies, value
):
    make_metric()
    r = client.post("/v1/experiments", json=bodies.experiment(alpha=value), headers=admin)
    body = assert_problem(r, 422)
    assert any(e["field"] == "alpha" for e in body["errors"])
