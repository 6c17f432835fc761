"""The migrations produce exactly the models' schema, and the committed OpenAPI file is current."""

import json
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import service.tables  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


def test_migrations_match_the_models(migrated_engine):
    with migrated_engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, SQLModel.metadata)
    assert diff == [], f"models and migrations differ; write a migration: {diff}"


def test_committed_openapi_matches_the_app():
    from service.main import create_app

    committed = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    current = json.loads(json.dumps(create_app().openapi(), sort_keys=True))
    assert committed == current, "openapi/openapi.json is stale: run `make openapi`"
    assert current["openapi"].startswith("3.1")


def test_every_route_has_a_summary_and_declares_its_errors():
    from service.main import create_app
    from service.routing import api_routes

    app = create_app()
    spec = app.openapi()
    seen = 0
    for path, methods, route in api_routes(app):
        if not route.include_in_schema:
            continue
        for method in methods - {"HEAD", "OPTIONS"}:
            seen += 1
            op = spec["paths"][path][method.lower()]
            doc = (route.endpoint.__doc__ or "").strip()
            assert doc, f"{method} {path} has no docstring"
            assert op["summary"] == doc.splitlines()[0], (
                f"{method} {path}: summary is not the docstring"
            )
            if path != "/healthz":
                assert {"401", "403"} <= set(op["responses"]), (
                    f"{method} {path} does not declare 401/403"
                )
    assert seen > 20
