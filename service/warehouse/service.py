"""Data sources (``product.md`` §13): create, read, update, delete, and test the connection
and the column mapping. Admin only (routes). Secrets are stored and never returned."""

from __future__ import annotations

from typing import Any

import sqlglot
from sqlmodel import Session, col, select

from service.analysis.query import DIALECTS, read_only_problem
from service.db import utcnow
from service.errors import ConflictError, FieldError, ValidationFailedError
from service.experiments.models import Experiment
from service.warehouse import engines
from service.warehouse.models import (
    BUILTIN,
    SECRET_FIELDS,
    ConnectionPublic,
    DataSource,
    DataSourceCreate,
    DataSourcePublic,
    DataSourceTest,
    DataSourceUpdate,
    SideCheck,
)
from service.warehouse.source import check_columns, sides_of, source_row

__all__ = [
    "builtin_public",
    "create_source",
    "delete_source",
    "get_source",
    "list_sources",
    "test_source",
    "update_source",
]


def _public(row: DataSource) -> DataSourcePublic:
    conn = dict(row.connection)
    secrets = sorted(k for k in SECRET_FIELDS if conn.pop(k, None) is not None)
    return DataSourcePublic(
        key=row.key,
        engine=row.engine,
        description=row.description,
        connection=ConnectionPublic(secrets=secrets, **conn),
        exposures=row.exposures,
        events=row.events,
        timeout_seconds=row.timeout_seconds,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def builtin_public() -> DataSourcePublic:
    """The built-in store, every experiment's default source."""
    return DataSourcePublic(
        key=BUILTIN,
        engine="builtin",
        builtin=True,
        description="Trialbook's own store (events sent to /v1/events); the default source",
        connection=ConnectionPublic(),
        exposures=None,
        events=None,
        timeout_seconds=None,
    )


_ENGINE_FIELDS: dict[str, set[str]] = {
    "sqlite": {"path"},
    "duckdb": {"path", "threads", "memory_limit_mb"},
    "postgresql": {"url", "url_env", "host", "port", "dbname", "user", "password", "password_env"},
    "clickhouse": {
        "path",
        "host",
        "port",
        "database",
        "username",
        "password",
        "password_env",
        "memory_limit_mb",
    },
    "spark": {"master", "files"},
    "bigquery": {"token", "database"},
    "snowflake": {"host", "user", "password", "password_env", "database"},
    "trino": {"host", "port", "user", "password", "password_env", "database"},
    "databricks": {"host", "token", "database"},
}


def _problems(
    engine: str, connection: dict[str, Any], exposures: dict[str, Any], events: dict[str, Any]
) -> list[FieldError]:
    """The mapping's SQL is one read-only SELECT and its tables parse, in the engine's dialect;
    the connection gives only fields of its engine."""
    dialect = DIALECTS[engine]
    errors: list[FieldError] = []
    allowed = _ENGINE_FIELDS[engine]
    for name in sorted(k for k, v in connection.items() if v is not None and k not in allowed):
        errors.append(
            FieldError(
                field=f"connection.{name}",
                message=f"the {engine} engine takes none; it takes {', '.join(sorted(allowed))}",
            )
        )
    for side_name, side in (("exposures", exposures), ("events", events)):
        if side.get("sql") is not None:
            problem = read_only_problem(str(side["sql"]), dialect)
            if problem is not None:
                errors.append(
                    FieldError(
                        field=f"{side_name}.sql",
                        message=f"{problem}",
                        type="statement_not_read_only",
                    )
                )
        if side.get("table") is not None:
            try:
                sqlglot.exp.to_table(str(side["table"]), dialect=dialect)
            except (sqlglot.errors.ParseError, sqlglot.errors.TokenError, ValueError) as exc:
                errors.append(
                    FieldError(
                        field=f"{side_name}.table",
                        message=f"not a table name in {dialect} ({str(exc)[:200]})",
                    )
                )
    return errors


def _raise(errors: list[FieldError]) -> None:
    if errors:
        raise ValidationFailedError(
            "The data source is invalid: " + "; ".join(f"{e.field}: {e.message}" for e in errors),
            errors=errors,
        )


def create_source(session: Session, body: DataSourceCreate) -> DataSourcePublic:
    if body.key == BUILTIN:
        raise ConflictError(
            f"'{BUILTIN}' is the built-in store's key; choose another.", code="duplicate_key"
        )
    if session.exec(select(DataSource.id).where(DataSource.key == body.key)).first() is not None:
        raise ConflictError(f"A data source '{body.key}' already exists.", code="duplicate_key")
    data = body.model_dump(mode="json", exclude_none=True)
    exposures, events = data["exposures"], data["events"]
    connection = data.get("connection") or {}
    _raise(_problems(body.engine, connection, exposures, events))
    row = DataSource(
        key=body.key,
        engine=body.engine,
        description=body.description,
        connection=connection,
        exposures=exposures,
        events=events,
        timeout_seconds=body.timeout_seconds,
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return _public(row)


def list_sources(session: Session) -> list[DataSourcePublic]:
    rows = session.exec(select(DataSource).order_by(col(DataSource.key))).all()
    return [builtin_public(), *(_public(r) for r in rows)]


def get_source(session: Session, key: str) -> DataSourcePublic:
    if key == BUILTIN:
        return builtin_public()
    return _public(source_row(session, key))


def update_source(session: Session, key: str, body: DataSourceUpdate) -> DataSourcePublic:
    if key == BUILTIN:
        raise ConflictError("The built-in store cannot be changed.", code="builtin_source")
    row = source_row(session, key)
    changes = body.model_dump(mode="json", exclude_unset=True)
    for name in ("connection", "exposures", "events", "timeout_seconds"):
        if name in changes and changes[name] is None:
            raise ValidationFailedError.on(name, "cannot be null; omit it to keep it")
    data = body.model_dump(mode="json", exclude_none=True, exclude_unset=True)
    connection = data.get("connection", row.connection)
    exposures = data.get("exposures", row.exposures)
    events = data.get("events", row.events)
    _raise(_problems(row.engine, connection, exposures, events))
    row.connection, row.exposures, row.events = connection, exposures, events
    if "timeout_seconds" in data:
        row.timeout_seconds = float(data["timeout_seconds"])
    if "description" in changes:
        row.description = changes["description"]
    row.updated_at = utcnow()
    session.add(row)
    session.commit()
    session.refresh(row)
    return _public(row)


def delete_source(session: Session, key: str) -> None:
    if key == BUILTIN:
        raise ConflictError("The built-in store cannot be deleted.", code="builtin_source")
    row = source_row(session, key)
    users = session.exec(
        select(Experiment.key).where(Experiment.data_source == key).order_by(col(Experiment.key))
    ).all()
    if users:
        raise ConflictError(
            f"Data source '{key}' is used by {len(users)} experiment(s) ({', '.join(users[:10])});"
            " they keep their data source.",
            code="data_source_in_use",
        )
    session.delete(row)
    session.commit()


def test_source(session: Session, key: str) -> DataSourceTest:
    """Connect, read the columns of both sides (no row) and check the mapping against them.

    Raises the source's problem (problem+json): driver missing, connection refused, a column
    not found, a statement refused or timed out."""
    if key == BUILTIN:
        raise ConflictError("The built-in store needs no test.", code="builtin_source")
    row = source_row(session, key)
    session.close()  # nothing more is read here: no transaction is held while the source runs
    exposures, events = sides_of(row)
    timeout = float(row.timeout_seconds)
    with engines.connect(row.key, row.engine, row.connection, timeout) as conn:
        exposures, events, found, probes = check_columns(row.key, conn, exposures, events, timeout)
    return DataSourceTest(
        key=row.key,
        engine=row.engine,
        ok=True,
        exposures=SideCheck(
            columns=found["exposures"],
            mapped=exposures.columns
            | {f"attributes.{k}": v for k, v in exposures.attributes.items()},
        ),
        events=SideCheck(columns=found["events"], mapped=events.columns),
        sql=probes,
    )
