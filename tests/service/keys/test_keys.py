"""API keys: hashed storage, admin-only management, bootstrap, the CLI."""

import os
import subprocess
import sys

from fastapi.testclient import TestClient
from sqlalchemy import text


def test_admin_creates_lists_and_revokes_keys(client, admin):
    r = client.post("/v1/keys", json={"name": "ci", "role": "sdk"}, headers=admin)
    assert r.status_code == 201, r.text
    created = r.json()
    secret = created["key"]
    assert secret.startswith("tb_") and len(secret) > 40
    listed = client.get("/v1/keys", headers=admin).json()["items"]
    assert "ci" in [k["name"] for k in listed]
    assert all("key" not in k and "key_hash" not in k for k in listed)
    sdk = {"Authorization": f"Bearer {secret}"}
    assert client.get("/v1/sdk/config", headers=sdk).status_code in (200, 404)
    r = client.delete(f"/v1/keys/{created['id']}", headers=admin)
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    assert client.get("/v1/keys", headers=sdk).status_code == 401


def test_keys_are_never_stored_in_plain_text(client, admin, engine):
    secret = client.post("/v1/keys", json={"name": "x", "role": "viewer"}, headers=admin).json()[
        "key"
    ]
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM api_key")).all()
    dump = repr(rows)
    assert secret not in dump
    assert secret[10:] not in dump


def test_revoking_an_unknown_key_is_404(client, admin):
    assert client.delete("/v1/keys/999999", headers=admin).status_code == 404


def test_an_admin_cannot_revoke_its_own_key(client, admin):
    me = next(
        k
        for k in client.get("/v1/keys", headers=admin).json()["items"]
        if k["name"] == "test-admin"
    )
    r = client.delete(f"/v1/keys/{me['id']}", headers=admin)
    assert r.status_code == 409 and r.json()["code"] == "revoke_own_key"
    assert client.get("/v1/keys", headers=admin).status_code == 200


def test_invalid_role_is_a_422_naming_the_field(client, admin):
    r = client.post("/v1/keys", json={"name": "x", "role": "root"}, headers=admin)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "role"


def test_bootstrap_admin_key_becomes_the_first_admin(engine, monkeypatch):
    from service.config import get_settings
    from service.main import create_app

    monkeypatch.setenv("TRIALBOOK_BOOTSTRAP_ADMIN_KEY", "tb_bootstrap_secret_for_tests_0123456789")
    get_settings.cache_clear()
    try:
        with TestClient(create_app()) as c:
            h = {"Authorization": "Bearer tb_bootstrap_secret_for_tests_0123456789"}
            assert c.get("/v1/keys", headers=h).status_code == 200
        # a second start does not add a second admin
        with TestClient(create_app()) as c:
            items = c.get("/v1/keys", headers=h).json()["items"]
            assert [k["name"] for k in items].count("bootstrap-admin") == 1
    finally:
        get_settings.cache_clear()


def test_bootstrap_is_ignored_when_an_admin_exists(client, admin, monkeypatch):
    from service.config import get_settings
    from service.main import create_app

    monkeypatch.setenv("TRIALBOOK_BOOTSTRAP_ADMIN_KEY", "tb_another_bootstrap_0123456789abcdef")
    get_settings.cache_clear()
    try:
        with TestClient(create_app()) as c:
            h = {"Authorization": "Bearer tb_another_bootstrap_0123456789abcdef"}
            assert c.get("/v1/keys", headers=h).status_code == 401
    finally:
        get_settings.cache_clear()


def test_cli_creates_a_key_that_authenticates(client, engine):
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", "keys", "create", "--role", "editor", "--name", "pm"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    secret = out.stdout.strip()
    assert secret.startswith("tb_")
    r = client.get("/v1/metrics", headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 200
