"""Shared fixtures: a real database (SQLite file, or PostgreSQL from TRIALBOOK_TEST_DATABASE_URL),
migrated with Alembic once per session and emptied between tests, and HTTP clients per role."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import SQLModel

TEST_DB_DIR = Path(os.environ.get("TRIALBOOK_TEST_TMP", "/tmp")) / f"trialbook-test-{os.getpid()}"


def _worker_database(url: str, worker: str) -> str:
    """One PostgreSQL database per pytest-xdist worker (`<database>_<worker>`), created here on
    the same server, so parallel workers never empty each other's tables."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"{base.database}_{worker}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def _database_url() -> str:
    url = os.environ.get("TRIALBOOK_TEST_DATABASE_URL")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if url:
        return _worker_database(url, worker) if worker else url
    TEST_DB_DIR.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{TEST_DB_DIR / 'test.db'}"


DATABASE_URL = _database_url()
os.environ["TRIALBOOK_DATABASE_URL"] = DATABASE_URL
os.environ.pop("TRIALBOOK_BOOTSTRAP_ADMIN_KEY", None)
os.environ.setdefault("TRIALBOOK_CHECK_INTERVAL_SECONDS", "0")
# Tests change keys and experiments between requests: no per-process SDK lookup cache.
os.environ.setdefault("TRIALBOOK_SDK_CACHE_SECONDS", "0")


def is_postgres() -> bool:
    return "postgres" in DATABASE_URL


@pytest.fixture(scope="session")
def migrated_engine() -> Iterator[Any]:
    from service import db
    from service.config import get_settings
    from service.migrate import upgrade

    get_settings.cache_clear()
    db.get_engine.cache_clear()
    engine = db.get_engine()
    if is_postgres():
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(str(TEST_DB_DIR / "test.db") + suffix).unlink(missing_ok=True)
    upgrade(DATABASE_URL)
    yield engine
    engine.dispose()


def _empty_tables(engine: Any) -> None:
    import service.models  # noqa: F401

    tables = [t.name for t in reversed(SQLModel.metadata.sorted_tables)]
    with engine.begin() as conn:
        if is_postgres():
            conn.execute(
                text(
                    "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"
                )
            )
        else:
            for t in tables:
                conn.execute(text(f'DELETE FROM "{t}"'))


@pytest.fixture
def engine(migrated_engine: Any) -> Iterator[Any]:
    _empty_tables(migrated_engine)
    yield migrated_engine


@pytest.fixture
def app(engine: Any) -> Any:
    from service.main import create_app

    return create_app()


@pytest.fixture
def client(app: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def keys(engine: Any) -> dict[str, dict[str, str]]:
    """Authorization headers for one key of each role."""
    from service.db import open_session
    from service.keys.models import Role
    from service.keys.service import create_key

    out: dict[str, dict[str, str]] = {}
    session = open_session(write=True)
    try:
        for role in Role:
            created = create_key(session, name=f"test-{role.value}", role=role)
            out[role.value] = {"Authorization": f"Bearer {created.key}"}
    finally:
        session.close()
    return out


@pytest.fixture
def admin(keys: dict[str, dict[str, str]]) -> dict[str, str]:
    return keys["admin"]


@pytest.fixture
def editor(keys: dict[str, dict[str, str]]) -> dict[str, str]:
    return keys["editor"]


def metric_body(key: str = "conversion", type_: str = "binomial", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"key": key, "name": key.replace("_", " ").title(), "type": type_}
    if type_ == "ratio":
        body |= {"numerator_event": f"{key}_num", "denominator_event": f"{key}_den"}
    else:
        body["event"] = extra.pop("event", key)
    return body | extra


def experiment_body(key: str = "new-checkout", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": key,
        "title": "New checkout flow",
        "owner": "pm@example.com",
        "hypothesis": "A one-page checkout raises purchases",
        "variants": [
            {"key": "control", "weight": 0.5, "is_control": True},
            {"key": "treatment", "weight": 0.5},
        ],
        "primary_metric": {"metric": "conversion", "mde": 0.1},
        "baseline": {"rate": 0.1},
    }
    return body | extra


@pytest.fixture
def make_metric(client: Any, admin: dict[str, str]) -> Any:
    def make(key: str = "conversion", type_: str = "binomial", **extra: Any) -> dict[str, Any]:
        r = client.post("/v1/metrics", json=metric_body(key, type_, **extra), headers=admin)
        assert r.status_code == 201, r.text
        return dict(r.json())

    return make


@pytest.fixture
def make_experiment(client: Any, admin: dict[str, str], make_metric: Any) -> Any:
    def make(key: str = "new-checkout", *, start: bool = False, **extra: Any) -> dict[str, Any]:
        existing = client.get("/v1/metrics/conversion", headers=admin)
        if existing.status_code == 404:
            make_metric("conversion")
        r = client.post("/v1/experiments", json=experiment_body(key, **extra), headers=admin)
        assert r.status_code == 201, r.text
        if start:
            r = client.post(f"/v1/experiments/{key}/start", headers=admin)
            assert r.status_code == 200, r.text
        return dict(r.json())

    return make


@pytest.fixture
def bodies() -> Any:
    """Factories for request bodies: ``bodies.metric(...)``, ``bodies.experiment(...)``."""

    class Bodies:
        metric = staticmethod(metric_body)
        experiment = staticmethod(experiment_body)

    return Bodies
