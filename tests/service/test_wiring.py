"""The process is wired in one place (service/wiring.py): the CLI lists every command whichever
way it is started, importing a module registers nothing, and the app's lifespan starts and stops
every background worker."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ["migrate", "serve", "keys", "openapi", "check", "calibrate", "report", "demo"]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}  # no wrapped help lines
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO, env=env)


def _listed(help_text: str) -> set[str]:
    words = {w.strip("│ ") for line in help_text.splitlines() for w in line.split()[:2]}
    return {c for c in COMMANDS if c in words}


@pytest.mark.parametrize(
    "program",
    [
        [sys.executable, "-m", "service.cli"],
        [str(Path(sys.executable).with_name("trialbook"))],
    ],
    ids=["python -m service.cli", "trialbook"],
)
def test_help_lists_every_command_however_the_cli_is_started(program):
    done = _run(*program, "--help")
    assert done.returncode == 0, done.stderr
    assert _listed(done.stdout) == set(COMMANDS), done.stdout
    keys = _run(*program, "keys", "--help")
    assert keys.returncode == 0 and "create" in keys.stdout, keys.stdout + keys.stderr


def test_python_m_service_cli_knows_the_domain_commands():
    # Regression: run as __main__, the CLI's registry was a second copy of service.cli that the
    # domains never filled: `python -m service.cli check` failed with "invalid choice: 'check'".
    done = _run(sys.executable, "-m", "service.cli", "check", "--help")
    assert done.returncode == 0, done.stderr
    assert "--no-deliver" in done.stdout


def test_a_usage_error_exits_2_with_the_reason():
    done = _run(sys.executable, "-m", "service.cli", "keys", "create", "--role", "x", "--name", "n")
    assert done.returncode == 2
    assert "--role" in done.stderr and "Traceback" not in done.stderr


def test_importing_the_domains_registers_nothing():
    code = """
import service.alerts.service, service.insights.service, service.snapshots.service
import service.templates.service, service.webhooks.service
from sqlalchemy import event
from sqlmodel import Session
from service.experiments import hooks as e
from service.webhooks import service as w
lists = [
    e.protocol_hooks, e.protocol_problem_hooks, e.update_hooks, e.phase_hooks, e.start_checks,
    e.transition_listeners,
]
assert all(not hooks for hooks in lists), lists
assert not event.contains(Session, "after_commit", w._wake_workers)
from service.main import create_app
create_app()
assert [f.__module__ for f in e.transition_listeners] == [
    "service.webhooks.service", "service.snapshots.service", "service.insights.service"
], e.transition_listeners
assert all(lists) and event.contains(Session, "after_commit", w._wake_workers)
create_app()
assert len(e.transition_listeners) == 3 and len(e.protocol_hooks) == 1
print("ok")
"""
    done = _run(sys.executable, "-c", code)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


WORKERS = {"sqlite-checkpoint", "results-refresh", "health-checks", "webhook-delivery"}


def _alive() -> set[str]:
    return {t.name for t in threading.enumerate() if t.is_alive()} & WORKERS


def test_the_lifespan_starts_every_worker_and_stops_them_at_shutdown(
    engine: Any, monkeypatch: pytest.MonkeyPatch
):
    from service.config import get_settings
    from service.main import create_app

    monkeypatch.setenv("TRIALBOOK_CHECK_INTERVAL_SECONDS", "3600")
    monkeypatch.setenv("TRIALBOOK_REFRESH_INTERVAL_SECONDS", "3600")
    get_settings.cache_clear()
    try:
        assert not _alive()
        with TestClient(create_app()) as client:
            assert client.get("/healthz").status_code == 200
            expected = (
                WORKERS if engine.dialect.name == "sqlite" else WORKERS - {"sqlite-checkpoint"}
            )
            assert _alive() == expected
        assert not _alive()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_an_interval_of_zero_runs_no_scheduler(engine: Any, monkeypatch: pytest.MonkeyPatch):
    from service.config import get_settings
    from service.main import create_app

    monkeypatch.setenv("TRIALBOOK_CHECK_INTERVAL_SECONDS", "0")
    monkeypatch.setenv("TRIALBOOK_REFRESH_INTERVAL_SECONDS", "0")
    get_settings.cache_clear()
    try:
        with TestClient(create_app()):
            assert "webhook-delivery" in _alive()
            assert not _alive() & {"results-refresh", "health-checks"}
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
