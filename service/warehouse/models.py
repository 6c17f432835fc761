"""Data sources (``product.md`` §13): the table and the schemas of ``/v1/data-sources``.

A data source names an engine, how to connect to it (secrets write-only: given inline or, better,
as the name of an environment variable, ``password_env``/``url_env``; never returned), and where
the organisation's exposures and events are (a table or a SELECT) with their columns mapped to
ours. The built-in store (``builtin``) is the default source of every experiment.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic import Field as PField
from sqlalchemy import JSON
from sqlmodel import Column, Field, Session, SQLModel, select

from service.db import UTCDateTime, utcnow
from service.text import RequestModel

__all__ = [
    "BUILTIN",
    "SECRET_FIELDS",
    "ConnectionIn",
    "DataSource",
    "DataSourceCreate",
    "DataSourceList",
    "DataSourcePublic",
    "DataSourceTest",
    "DataSourceUpdate",
    "EventsIn",
    "ExposuresIn",
    "data_source_problem",
]

KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]{2,79}$"
ATTRIBUTE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$"
BUILTIN = "builtin"  # the key of the built-in store as a source

Engine = Literal[
    "sqlite",
    "postgresql",
    "duckdb",
    "clickhouse",
    "spark",
    "bigquery",
    "snowflake",
    "trino",
    "databricks",
]
ColumnName = Annotated[str, PField(min_length=1, max_length=200, pattern=r"\S")]
# Connection fields that are secrets: accepted, stored, never returned.
SECRET_FIELDS = ("password", "url", "token")


class DataSource(SQLModel, table=True):
    __tablename__ = "data_source"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=80, unique=True)
    engine: str = Field(max_length=20)
    description: str | None = Field(default=None, max_length=2000)
    connection: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    exposures: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    events: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    timeout_seconds: float = 60.0
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class ConnectionIn(RequestModel):
    """How to reach the engine; which fields apply depends on it (the others are refused)."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = PField(
        default=None, max_length=1000, description="sqlite/duckdb file, chdb data directory"
    )
    url: str | None = PField(default=None, max_length=2000, description="postgresql URL (secret)")
    url_env: str | None = PField(
        default=None, max_length=200, description="environment variable holding the URL"
    )
    host: str | None = PField(default=None, max_length=300)
    port: int | None = PField(default=None, ge=1, le=65535, strict=True)
    dbname: str | None = PField(default=None, max_length=300, description="postgresql database")
    database: str | None = PField(default=None, max_length=300, description="clickhouse database")
    user: str | None = PField(default=None, max_length=300, description="postgresql user")
    username: str | None = PField(default=None, max_length=300, description="clickhouse user")
    password: str | None = PField(default=None, max_length=1000, description="secret, write-only")
    password_env: str | None = PField(
        default=None, max_length=200, description="environment variable holding the password"
    )
    token: str | None = PField(default=None, max_length=4000, description="secret, write-only")
    master: str | None = PField(
        default=None, max_length=300, description="spark master URL, default local[2]"
    )
    files: (
        dict[
            Annotated[str, PField(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")],
            Annotated[str, PField(max_length=1000)],
        ]
        | None
    ) = PField(default=None, max_length=20, description="spark: view name -> Parquet/CSV/JSON path")
    threads: int | None = PField(
        default=None, ge=1, le=256, strict=True, description="duckdb threads"
    )
    memory_limit_mb: int | None = PField(
        default=None,
        ge=64,
        le=16_777_216,
        strict=True,
        description=(
            "duckdb, clickhouse: a statement's memory (MiB; DuckDB and chdb run in the service"
            " process); past it, the engine spills to disk"
        ),
    )


class _SideIn(RequestModel):
    model_config = ConfigDict(extra="forbid")

    table: str | None = PField(
        default=None, min_length=1, max_length=500, description="table (db.schema.table)"
    )
    sql: str | None = PField(
        default=None, min_length=1, max_length=20_000, description="one read-only SELECT"
    )

    @model_validator(mode="after")
    def _table_or_sql(self) -> _SideIn:
        if (self.table is None) == (self.sql is None):
            raise ValueError("give exactly one of `table` or `sql`")
        return self


class ExposureColumns(RequestModel):
    """Our exposure columns -> the organisation's column names."""

    model_config = ConfigDict(extra="forbid")

    unit_id: ColumnName
    experiment: ColumnName
    variant: ColumnName
    timestamp: ColumnName
    event_id: ColumnName | None = PField(default=None, description="duplicates of it count once")
    phase: ColumnName | None = PField(
        default=None,
        description="without it: phase 1 every exposure, later phases from their start",
    )
    attributes: dict[Annotated[str, PField(pattern=ATTRIBUTE_PATTERN)], ColumnName] = PField(
        default_factory=dict,
        max_length=50,
        description="exposure attribute (a dimension) -> column",
    )


class EventColumns(RequestModel):
    """Our conversion columns -> the organisation's column names."""

    model_config = ConfigDict(extra="forbid")

    unit_id: ColumnName
    name: ColumnName
    timestamp: ColumnName
    value: ColumnName | None = PField(
        default=None, description="without it (or NULL) the value is 1"
    )
    event_id: ColumnName | None = PField(default=None, description="duplicates of it count once")


class ExposuresIn(_SideIn):
    columns: ExposureColumns


class EventsIn(_SideIn):
    columns: EventColumns


Timeout = Annotated[float, PField(gt=0, le=3600, strict=True, description="seconds per statement")]


class DataSourceCreate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    key: str = PField(pattern=KEY_PATTERN, description="slug, unique, immutable")
    engine: Engine
    description: str | None = PField(default=None, max_length=2000)
    connection: ConnectionIn = PField(default_factory=ConnectionIn)
    exposures: ExposuresIn
    events: EventsIn
    timeout_seconds: Timeout = 60.0


class DataSourceUpdate(RequestModel):
    """A PATCH: the fields given replace the stored ones (``connection`` as a whole: give the
    secrets again, or their ``*_env`` names)."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = PField(default=None, max_length=2000)
    connection: ConnectionIn | None = None
    exposures: ExposuresIn | None = None
    events: EventsIn | None = None
    timeout_seconds: Timeout | None = None


class ConnectionPublic(BaseModel):
    """The connection without its secrets: ``secrets`` names those that are set."""

    model_config = ConfigDict(extra="allow")

    secrets: list[str] = PField(default_factory=list)


class DataSourcePublic(BaseModel):
    key: str
    engine: str
    builtin: bool = False
    description: str | None = None
    connection: ConnectionPublic
    exposures: dict[str, Any] | None
    events: dict[str, Any] | None
    timeout_seconds: float | None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class DataSourceList(BaseModel):
    items: list[DataSourcePublic]


class SideCheck(BaseModel):
    """What ``/test`` found on one side: the source's columns and a count of its rows."""

    columns: list[str]
    mapped: dict[str, str]


class DataSourceTest(BaseModel):
    key: str
    engine: str
    ok: bool
    exposures: SideCheck
    events: SideCheck
    sql: dict[str, str] = PField(
        description="the probe statements, rendered in the engine's dialect"
    )


def data_source_problem(session: Session, key: str) -> str | None:
    """Why an experiment cannot name ``key`` as its data source (None: it can)."""
    if key == BUILTIN:
        return None
    if session.exec(select(DataSource.id).where(DataSource.key == key)).first() is None:
        return (
            f"no data source '{key}'; an admin creates it with POST /v1/data-sources"
            " (GET /v1/data-sources lists them; omit the field for the built-in store)"
        )
    return None
