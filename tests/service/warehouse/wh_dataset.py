"""One synthetic dataset for every engine: windows, CUPED pre-periods, winsorization, ratio and
quantile metrics, multiple exposures, overrides, dimensions, NULLs, duplicates, time zones.

``events(key)`` are the events as ``/v1/events`` takes them; ``load_*`` write the same rows into
a warehouse of each engine, with the organisation's own column names (``MAPPING``)."""

from __future__ import annotations

import os
import random
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

# Ours -> theirs: the warehouse's columns are named differently on purpose.
EXPOSURE_COLUMNS = {
    "unit_id": "uid",
    "experiment": "exp_key",
    "variant": "arm",
    "timestamp": "seen_at",
    "event_id": "evt_id",
    "attributes": {"country": "country_code", "plan": "plan"},
}
EVENT_COLUMNS = {
    "unit_id": "user_ref",
    "name": "ev_name",
    "value": "amount",
    "timestamp": "happened_at",
    "event_id": "evt_id",
}
VARIANTS = ("control", "treatment")
OVERRIDES = {"u-0003": "treatment", "u-0011": "control"}
WINDOW_HOURS = 48.0
TZS = (UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30)))


@dataclass(frozen=True)
class Row:
    kind: str  # exposure | conversion
    event_id: str | None
    unit: str | None
    ts: datetime
    variant: str | None = None
    name: str | None = None
    value: float | None = None
    country: str | None = None
    plan: str | None = None
    ingest: bool = True  # False: only in the warehouse (a NULL unit: no event to send)


def rows(n_units: int = 160, seed: int = 7, now: datetime | None = None) -> list[Row]:
    rnd = random.Random(seed)
    now = now or datetime.now(UTC)
    base = (now - timedelta(days=6)).replace(microsecond=123_456)
    out: list[Row] = []
    k = 0

    def eid() -> str:
        nonlocal k
        k += 1
        return f"ev-{k:06d}"

    for i in range(n_units):
        unit = f"u-{i:04d}"
        variant = VARIANTS[rnd.random() < 0.5]
        first = base + timedelta(
            seconds=rnd.randint(0, 3 * 86_400), microseconds=rnd.randint(0, 999_999)
        )
        country = rnd.choice(["fr", "de", "us", "es", "it", None])
        plan = rnd.choice(["basic", "pro"])
        out.append(Row("exposure", eid(), unit, first, variant=variant, country=country, plan=plan))
        if rnd.random() < 0.3:  # a later exposure, same variant (another country: first kept)
            out.append(
                Row(
                    "exposure",
                    eid(),
                    unit,
                    first + timedelta(hours=rnd.uniform(1, 30)),
                    variant=variant,
                    country="zz",
                    plan=plan,
                )
            )
        if i % 23 == 5:  # exposed to both variants: excluded
            other = VARIANTS[variant == "control"]
            out.append(
                Row(
                    "exposure",
                    eid(),
                    unit,
                    first + timedelta(minutes=5),
                    variant=other,
                    country=country,
                    plan=plan,
                )
            )
        lift = 1.3 if variant == "treatment" else 1.0
        for _ in range(rnd.randint(0, 4)):  # window, pre-period, after the window
            offset = rnd.uniform(-10 * 24, 60)  # hours from the first exposure
            ts = first + timedelta(hours=offset)
            if ts > now:
                continue
            name = rnd.choice(["purchase", "visit", "visit"])
            value: float | None = (
                round(rnd.expovariate(1 / 20) * lift, 2) if name == "purchase" else None
            )
            if name == "purchase" and rnd.random() < 0.1:
                value = None  # NULL value: 1
            if name == "purchase" and rnd.random() < 0.05:
                value = 5000.0  # an outlier for the winsorization
            out.append(Row("conversion", eid(), unit, ts, name=name, value=value))
        if i % 31 == 2 and out[-1].kind == "conversion":  # a duplicate row of one event id
            out.append(out[-1])
    # a unit exposed at the exact boundary of the window: an event at first + 48 h (excluded)
    edge = base + timedelta(days=1)
    out.append(Row("exposure", eid(), "u-edge", edge, variant="control", country="fr", plan="pro"))
    out.append(
        Row(
            "conversion",
            eid(),
            "u-edge",
            edge + timedelta(hours=WINDOW_HOURS),
            name="purchase",
            value=7.0,
        )
    )
    out.append(
        Row(
            "conversion",
            eid(),
            "u-edge",
            edge + timedelta(hours=WINDOW_HOURS) - timedelta(microseconds=1),
            name="purchase",
            value=3.0,
        )
    )
    out.append(Row("conversion", eid(), "u-edge", edge, name="visit"))
    # warehouse-only rows: a NULL unit (ignored), an event without an event id
    out.append(Row("conversion", eid(), None, edge, name="purchase", value=99.0, ingest=False))
    out.append(Row("exposure", eid(), None, edge, variant="control", ingest=False))
    return out


def local(ts: datetime, i: int) -> datetime:
    """The same instant in one of three time zones (the warehouse keeps offsets)."""
    return ts.astimezone(TZS[i % len(TZS)])


def start_in_store(
    client: Any, body: dict[str, Any], data: list[Row], admin: Any, sdk: Any
) -> None:
    """The built-in store's twin: the experiment ``body`` created and started, and the rows'
    events sent through ``/v1/events`` (every one accepted)."""
    key = body["key"]
    r = client.post("/v1/experiments", json=body, headers=admin)
    assert r.status_code == 201, r.text
    assert client.post(f"/v1/experiments/{key}/start", headers=admin).status_code == 200
    sent = events(data, key)
    for start in range(0, len(sent), 2000):
        r = client.post("/v1/events", json={"events": sent[start : start + 2000]}, headers=sdk)
        assert r.status_code == 200 and r.json()["rejected"] == [], r.text


def events(data: list[Row], experiment: str) -> list[dict[str, Any]]:
    """The rows as /v1/events takes them (a NULL value: no value, i.e. 1)."""
    out: list[dict[str, Any]] = []
    for i, r in enumerate(data):
        if not r.ingest:
            continue
        if r.kind == "exposure":
            ev: dict[str, Any] = {
                "event_id": f"{experiment}-{r.event_id}",
                "type": "exposure",
                "experiment": experiment,
                "variant": r.variant,
                "unit_id": r.unit,
                "timestamp": local(r.ts, i).isoformat(),
            }
            attrs = {k: v for k, v in (("country", r.country), ("plan", r.plan)) if v is not None}
            if attrs:
                ev["attributes"] = attrs
        else:
            ev = {
                "event_id": f"{experiment}-{r.event_id}",
                "type": "conversion",
                "name": r.name,
                "unit_id": r.unit,
                "timestamp": local(r.ts, i).isoformat(),
            }
            if r.value is not None:
                ev["value"] = r.value
        out.append(ev)
    return out


def exposure_tuples(data: list[Row], experiment: str) -> list[tuple[Any, ...]]:
    return [
        (r.unit, experiment, r.variant, local(r.ts, i), r.event_id, r.country, r.plan)
        for i, r in enumerate(data)
        if r.kind == "exposure"
    ]


def event_tuples(data: list[Row]) -> list[tuple[Any, ...]]:
    return [
        (r.unit, r.name, r.value, local(r.ts, i), r.event_id)
        for i, r in enumerate(data)
        if r.kind == "conversion"
    ]


EXPOSURES_DDL = "uid VARCHAR, exp_key VARCHAR, arm VARCHAR, seen_at {ts}, evt_id VARCHAR, country_code VARCHAR, plan VARCHAR"  # noqa: E501
EVENTS_DDL = "user_ref VARCHAR, ev_name VARCHAR, amount DOUBLE, happened_at {ts}, evt_id VARCHAR"


def load_duckdb(path: Path, data: list[Row], experiment: str) -> None:
    """A DuckDB file: exposures behind a view (a SQL-defined source reads it), events a table."""
    import duckdb

    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE TABLE raw_exposures ({EXPOSURES_DDL.format(ts='TIMESTAMPTZ')})")
    con.execute(f"CREATE TABLE events ({EVENTS_DDL.format(ts='TIMESTAMPTZ')})")
    con.executemany(
        "INSERT INTO raw_exposures VALUES (?, ?, ?, ?, ?, ?, ?)", exposure_tuples(data, experiment)
    )
    con.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", event_tuples(data))
    con.execute("CREATE VIEW exposures AS SELECT * FROM raw_exposures")
    con.close()


def load_sqlite(path: Path, data: list[Row], experiment: str) -> None:
    """A SQLite file: ISO-8601 text with offsets; events split into two tables (a join)."""
    con = sqlite3.connect(path)
    con.execute(f"CREATE TABLE exposures ({EXPOSURES_DDL.format(ts='TEXT')})")
    con.execute(
        "CREATE TABLE ev (user_ref TEXT, name_id INTEGER, amount REAL, happened_at TEXT, evt_id TEXT)"  # noqa: E501
    )
    con.execute("CREATE TABLE ev_names (id INTEGER PRIMARY KEY, label TEXT)")
    con.executemany("INSERT INTO ev_names VALUES (?, ?)", [(1, "purchase"), (2, "visit")])
    con.executemany(
        "INSERT INTO exposures VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(*t[:3], t[3].isoformat(), *t[4:]) for t in exposure_tuples(data, experiment)],
    )
    con.executemany(
        "INSERT INTO ev VALUES (?, ?, ?, ?, ?)",
        [
            (t[0], 1 if t[1] == "purchase" else 2, t[2], t[3].isoformat(), t[4])
            for t in event_tuples(data)
        ],
    )
    con.commit()
    con.close()


SQLITE_EVENTS_SQL = (
    "SELECT e.user_ref, n.label AS ev_name, e.amount, e.happened_at, e.evt_id"
    " FROM ev e JOIN ev_names n ON n.id = e.name_id"
)


def load_postgres(url: str, schema: str, data: list[Row], experiment: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        con.execute(f"CREATE SCHEMA {schema}")
        con.execute(f"CREATE TABLE {schema}.exposures ({EXPOSURES_DDL.format(ts='TIMESTAMPTZ')})")
        con.execute(
            f"CREATE TABLE {schema}.events ({EVENTS_DDL.format(ts='TIMESTAMPTZ').replace('DOUBLE', 'DOUBLE PRECISION')})"  # noqa: E501
        )
        with con.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {schema}.exposures VALUES (%s, %s, %s, %s, %s, %s, %s)",
                exposure_tuples(data, experiment),
            )
            cur.executemany(
                f"INSERT INTO {schema}.events VALUES (%s, %s, %s, %s, %s)", event_tuples(data)
            )


def load_chdb(path: Path, data: list[Row], experiment: str) -> None:
    """A chdb data directory with a MergeTree table per side (DateTime64 in UTC)."""
    from chdb import session

    from service.warehouse.engines import close_chdb

    close_chdb()
    s = session.Session(str(path))
    s.query("CREATE DATABASE IF NOT EXISTS wh")
    s.query(
        "CREATE TABLE wh.exposures (uid Nullable(String), exp_key String, arm Nullable(String),"
        " seen_at DateTime64(6, 'UTC'), evt_id Nullable(String), country_code Nullable(String),"
        " plan Nullable(String)) ENGINE = MergeTree ORDER BY tuple()"
    )
    s.query(
        "CREATE TABLE wh.events (user_ref Nullable(String), ev_name String, amount Nullable(Float64),"  # noqa: E501
        " happened_at DateTime64(6, 'UTC'), evt_id Nullable(String)) ENGINE = MergeTree ORDER BY tuple()"  # noqa: E501
    )

    def lit(v: Any) -> str:
        if v is None:
            return "NULL"
        if isinstance(v, datetime):
            return "'" + v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") + "'"
        if isinstance(v, float):
            return repr(v)
        return "'" + str(v).replace("'", "''") + "'"

    for table, tuples in (
        ("exposures", exposure_tuples(data, experiment)),
        ("events", event_tuples(data)),
    ):
        values = ", ".join("(" + ", ".join(lit(v) for v in t) + ")" for t in tuples)
        s.query(f"INSERT INTO wh.{table} VALUES {values}")
    s.close()


def load_parquet(folder: Path, data: list[Row], experiment: str) -> tuple[Path, Path]:
    """Parquet files (written by DuckDB) for Spark's temporary views."""
    import duckdb

    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "stage.duckdb"
    load_duckdb(db, data, experiment)
    con = duckdb.connect(str(db))
    xs, ev = folder / "exposures.parquet", folder / "events.parquet"
    con.execute(f"COPY (SELECT * FROM raw_exposures) TO '{xs}' (FORMAT parquet)")
    con.execute(f"COPY (SELECT * FROM events) TO '{ev}' (FORMAT parquet)")
    con.close()
    return xs, ev


def warehouse_postgres_url() -> str | None:
    """A PostgreSQL server for the PostgreSQL source: the test database's when the suite runs
    on PostgreSQL, else ``TRIALBOOK_TEST_WAREHOUSE_POSTGRES_URL``; None: not tested here."""
    url = os.environ.get("TRIALBOOK_TEST_WAREHOUSE_POSTGRES_URL")
    test_url = os.environ.get("TRIALBOOK_TEST_DATABASE_URL", "")
    if url is None and "postgres" in test_url:
        url = test_url
    if url is None:
        return None
    return url.replace("postgresql+psycopg://", "postgresql://")
