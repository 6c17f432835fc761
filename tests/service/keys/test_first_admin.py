"""The first start: an empty database gets one admin key, printed once with how to use it.

The servers are real ``trialbook serve`` processes (LiveServer with ``cli=True``) over the suite's
database (SQLite, or PostgreSQL with TRIALBOOK_TEST_DATABASE_URL), emptied first.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.support.live import REPO, LiveServer

# Several-worker servers: one after another on one pytest-xdist worker (`--dist loadgroup`), not
# side by side, so their workers' imports do not starve each other on a small machine.
pytestmark = pytest.mark.xdist_group("first-admin")

# A bound against a hung start, not a speed check: on a loaded 2-core CI machine, three server
# workers importing the app at once took over 180 s.
START_TIMEOUT_S = 420

DATABASE_URL = os.environ["TRIALBOOK_DATABASE_URL"]  # the suite's database (tests/conftest.py)
KEY_RE = re.compile(r"^ {4}(tb_[A-Za-z0-9_-]{40,})$", re.MULTILINE)


def printed_keys(log: Path) -> list[str]:
    """Every admin key the server's first start printed into its log."""
    return KEY_RE.findall(log.read_text(errors="replace"))


def admin_rows(engine: Any) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [
            (r[0], r[1])
            for r in conn.execute(text("SELECT name, role FROM api_key WHERE role = 'admin'"))
        ]


def test_a_first_start_creates_one_admin_key_and_prints_how_to_use_it(engine, tmp_path):
    log = tmp_path / "server.log"
    server = LiveServer(database_url=DATABASE_URL, log=log, cli=True, workers=2)
    server.start(
        timeout=START_TIMEOUT_S
    )  # two workers import the app at once: slow on a busy machine
    try:
        keys = printed_keys(log)
        assert len(keys) == 1, server.log_tail()
        out = log.read_text()
        assert f'curl -H "Authorization: Bearer {keys[0]}" http://127.0.0.1:' in out
        assert f"export TRIALBOOK_API_KEY={keys[0]}" in out
        assert "make demo" in out
        r = httpx.get(server.url + "/v1/keys", headers={"Authorization": f"Bearer {keys[0]}"})
        assert r.status_code == 200, r.text
        assert [(k["name"], k["role"]) for k in r.json()["items"]] == [("first-admin", "admin")]
    finally:
        server.stop()
    # A second start finds the admin key: nothing new is created or printed.
    server.start(timeout=START_TIMEOUT_S)
    server.stop()
    assert len(printed_keys(log)) == 1
    assert admin_rows(engine) == [("first-admin", "admin")]


def test_servers_starting_at_once_create_one_admin_key_between_them(engine, tmp_path):
    servers = [
        LiveServer(database_url=DATABASE_URL, log=tmp_path / f"s{i}.log", cli=True)
        for i in range(3)
    ]
    errors: list[BaseException] = []

    def start(s: LiveServer) -> None:
        try:
            s.start(timeout=120)
        except BaseException as exc:  # reported below with the others
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        assert not errors, errors
        printed = [k for s in servers for k in printed_keys(s.log)]
        assert len(printed) == 1, [s.log_tail() for s in servers]
        assert admin_rows(engine) == [("first-admin", "admin")]
        for s in servers:  # every server accepts the one key
            r = httpx.get(s.url + "/v1/keys", headers={"Authorization": f"Bearer {printed[0]}"})
            assert r.status_code == 200
    finally:
        for s in servers:
            s.stop()


def test_a_bootstrap_key_with_several_workers_is_stored_once_and_nothing_is_printed(
    engine, tmp_path
):
    token = "tb_bootstrap_for_the_first_start_test_0123456789"
    log = tmp_path / "server.log"
    server = LiveServer(
        database_url=DATABASE_URL, log=log, cli=True, workers=3, bootstrap_admin_key=token
    )
    server.start(
        timeout=START_TIMEOUT_S
    )  # three workers import the app at once: slow on a busy machine
    try:
        r = httpx.get(server.url + "/v1/keys", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, server.log_tail()
    finally:
        server.stop()
    assert printed_keys(log) == []
    assert admin_rows(engine) == [("bootstrap-admin", "admin")]


def test_a_start_with_an_admin_key_present_creates_none(engine, tmp_path):
    from service.db import open_session
    from service.keys.models import Role
    from service.keys.service import create_key

    with open_session(write=True) as session:
        create_key(session, name="ops", role=Role.admin)
    log = tmp_path / "server.log"
    with LiveServer(database_url=DATABASE_URL, log=log, cli=True):
        pass
    assert printed_keys(log) == []
    assert admin_rows(engine) == [("ops", "admin")]


def test_serve_refuses_a_database_that_does_not_exist_and_says_to_migrate(tmp_path):
    db = tmp_path / "missing.db"
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--port", "1"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "TRIALBOOK_DATABASE_URL": f"sqlite:///{db}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "migrate" in done.stderr and str(db) in done.stderr
    assert not db.exists()  # never created as a side effect


def test_a_request_without_a_key_says_where_the_first_key_comes_from(client):
    r = client.get("/")
    assert r.status_code == 401
    detail = r.json()["detail"]
    assert "Authorization: Bearer" in detail and "first start printed an admin key" in detail
