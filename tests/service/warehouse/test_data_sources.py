"""/v1/data-sources: admin only, secrets never returned, the mapping and the statements checked,
and every refusal a problem+json naming what to fix — on /test and in the snapshot, never a 500."""

from __future__ import annotations

import sys
import threading
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import wh_dataset as dataset
from wh_dataset import warehouse_postgres_url

from service.analysis.query import Side

METRIC = {"key": "conversion", "name": "Conversion", "type": "binomial", "event": "purchase"}


def duckdb_source(path: Path, key: str = "wh-duck", **extra: Any) -> dict[str, Any]:
    return {
        "key": key,
        "engine": "duckdb",
        "connection": {"path": str(path)},
        "exposures": {"table": "exposures", "columns": dataset.EXPOSURE_COLUMNS},
        "events": {"table": "events", "columns": dataset.EVENT_COLUMNS},
    } | extra


def experiment(key: str, source: str) -> dict[str, Any]:
    return {
        "key": key,
        "title": "Checkout",
        "owner": "pm@example.com",
        "hypothesis": "The new checkout raises purchases",
        "variants": [
            {"key": "control", "weight": 0.5, "is_control": True},
            {"key": "treatment", "weight": 0.5},
        ],
        "primary_metric": {"metric": "conversion", "mde": 0.1},
        "baseline": {"rate": 0.3},
        "data_source": source,
    }


@pytest.fixture
def duck(tmp_path: Path) -> Path:
    path = tmp_path / "wh.duckdb"
    dataset.load_duckdb(path, dataset.rows(n_units=40), "exp-duck")
    return path


def problem(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = dict(r.json())
    assert body["code"] == code, body
    return body


def test_data_sources_are_admin_only_and_list_the_built_in_store_first(
    client: Any, keys: dict[str, dict[str, str]], duck: Path
) -> None:
    for role in ("editor", "viewer", "sdk"):
        assert client.get("/v1/data-sources", headers=keys[role]).status_code == 403
        r = client.post("/v1/data-sources", json=duckdb_source(duck), headers=keys[role])
        assert r.status_code == 403
    assert (
        client.post("/v1/data-sources", json=duckdb_source(duck), headers=keys["admin"]).status_code
        == 201
    )
    items = client.get("/v1/data-sources", headers=keys["admin"]).json()["items"]
    assert [i["key"] for i in items] == ["builtin", "wh-duck"]
    assert items[0]["builtin"] is True
    r = client.post(
        "/v1/data-sources", json=duckdb_source(duck, key="builtin"), headers=keys["admin"]
    )
    problem(r, 409, "duplicate_key")


def test_secrets_are_write_only(client: Any, admin: dict[str, str]) -> None:
    body = {
        "key": "wh-pg",
        "engine": "postgresql",
        "connection": {
            "url": "postgresql://analyst:s3cr3t-pw@127.0.0.1:1/x",
            "password_env": "WH_PG_PASSWORD",
        },
        "exposures": {"table": "exposures", "columns": dataset.EXPOSURE_COLUMNS},
        "events": {"table": "events", "columns": dataset.EVENT_COLUMNS},
    }
    created = client.post("/v1/data-sources", json=body, headers=admin)
    assert created.status_code == 201, created.text
    for r in (
        created,
        client.get("/v1/data-sources/wh-pg", headers=admin),
        client.get("/v1/data-sources", headers=admin),
    ):
        assert "s3cr3t-pw" not in r.text
    got = client.get("/v1/data-sources/wh-pg", headers=admin).json()
    assert got["connection"]["secrets"] == ["url"]
    assert got["connection"]["password_env"] == "WH_PG_PASSWORD"  # a reference, not a secret


def test_a_statement_that_writes_is_refused_at_registration(
    client: Any, admin: dict[str, str], duck: Path
) -> None:
    for sql, what in (
        ("DELETE FROM exposures", "DELETE"),
        ("SELECT * FROM exposures; DROP TABLE events", "2 statements"),
        ("CREATE TABLE x AS SELECT * FROM exposures", "CREATE"),
        ("WITH d AS (DELETE FROM events RETURNING *) SELECT * FROM d", "DELETE"),
    ):
        body = duckdb_source(duck)
        body["exposures"] = {"sql": sql, "columns": dataset.EXPOSURE_COLUMNS}
        got = problem(
            client.post("/v1/data-sources", json=body, headers=admin), 422, "validation_error"
        )
        assert got["errors"][0]["field"] == "exposures.sql"
        assert what in got["errors"][0]["message"], got
    assert client.get("/v1/data-sources/wh-duck", headers=admin).status_code == 404


def test_the_engine_refuses_a_statement_that_is_not_a_select_before_it_runs(duck: Path) -> None:
    from service.warehouse import engines

    with engines.connect("wh", "duckdb", {"path": str(duck)}, 30) as conn:
        with pytest.raises(engines.StatementRefusedError, match="only SELECT"):
            engines.run("wh", conn, "DROP TABLE events", 30)
        assert engines.run("wh", conn, "SELECT COUNT(*) FROM events", 30)[1][0][0] > 0


def test_test_checks_the_mapping_and_names_the_missing_column(
    client: Any, admin: dict[str, str], duck: Path
) -> None:
    assert client.post("/v1/metrics", json=METRIC, headers=admin).status_code == 201
    body = duckdb_source(duck)
    body["events"] = {
        "table": "events",
        "columns": dataset.EVENT_COLUMNS | {"value": "revenue_usd"},
    }
    assert client.post("/v1/data-sources", json=body, headers=admin).status_code == 201
    got = problem(
        client.post("/v1/data-sources/wh-duck/test", headers=admin), 422, "column_not_found"
    )
    assert got["errors"][0]["field"] == "events.columns.value"
    assert "revenue_usd" in got["errors"][0]["message"] and "amount" in got["errors"][0]["message"]
    # an experiment on it: the snapshot fails with the same problem, results say it (not a 500)
    assert (
        client.post(
            "/v1/experiments", json=experiment("exp-duck", "wh-duck"), headers=admin
        ).status_code
        == 201
    )
    assert client.post("/v1/experiments/exp-duck/start", headers=admin).status_code == 200
    got = problem(
        client.get("/v1/experiments/exp-duck/results", headers=admin), 502, "snapshot_failed"
    )
    assert "column_not_found" in got["detail"] and "revenue_usd" in got["detail"]
    snaps = client.get("/v1/experiments/exp-duck/results/snapshots", headers=admin).json()[
        "snapshots"
    ]
    assert snaps[0]["state"] == "failed" and "events.columns.value" in snaps[0]["error"]
    # fixed by a PATCH of the mapping: the next read computes the results on the source
    fix = {"events": {"table": "events", "columns": dataset.EVENT_COLUMNS}}
    assert client.patch("/v1/data-sources/wh-duck", json=fix, headers=admin).status_code == 200
    assert client.post("/v1/data-sources/wh-duck/test", headers=admin).status_code == 200
    r = client.post("/v1/experiments/exp-duck/results/refresh", headers=admin)
    assert r.status_code == 202
    got = client.get("/v1/experiments/exp-duck/results", headers=admin)
    assert got.status_code == 200, got.text
    assert got.json()["units"] > 0


def test_an_experiment_must_name_an_existing_data_source(
    client: Any, admin: dict[str, str]
) -> None:
    assert client.post("/v1/metrics", json=METRIC, headers=admin).status_code == 201
    got = problem(
        client.post("/v1/experiments", json=experiment("exp-x", "nowhere"), headers=admin),
        422,
        "validation_error",
    )
    assert got["errors"][0]["field"] == "data_source"


def test_a_slow_source_times_out_with_a_clear_error_and_blocks_nothing_else(
    client: Any, admin: dict[str, str], duck: Path, tmp_path: Path
) -> None:
    assert client.post("/v1/metrics", json=METRIC, headers=admin).status_code == 201
    slow = duckdb_source(duck, key="wh-slow", timeout_seconds=1)
    # a cross join of the exposures with a billion rows: minutes of work
    slow["exposures"] = {
        "sql": "SELECT e.* FROM exposures e, range(1000000000) r WHERE r.range % 1000000007 = 0",
        "columns": dataset.EXPOSURE_COLUMNS,
    }
    assert client.post("/v1/data-sources", json=slow, headers=admin).status_code == 201
    assert (
        client.post(
            "/v1/experiments", json=experiment("exp-duck", "wh-slow"), headers=admin
        ).status_code
        == 201
    )
    assert client.post("/v1/experiments/exp-duck/start", headers=admin).status_code == 200
    got = problem(
        client.get("/v1/experiments/exp-duck/results", headers=admin), 502, "snapshot_failed"
    )
    assert "data_source_timeout" in got["detail"] and "1 s" in got["detail"]
    # another source answers meanwhile
    other = tmp_path / "other.duckdb"
    dataset.load_duckdb(other, dataset.rows(n_units=20), "exp-fast")
    assert (
        client.post(
            "/v1/data-sources", json=duckdb_source(other, key="wh-fast"), headers=admin
        ).status_code
        == 201
    )
    assert (
        client.post(
            "/v1/experiments", json=experiment("exp-fast", "wh-fast"), headers=admin
        ).status_code
        == 201
    )
    assert client.post("/v1/experiments/exp-fast/start", headers=admin).status_code == 200
    assert client.get("/v1/experiments/exp-fast/results", headers=admin).status_code == 200


def test_wrong_credentials_are_a_connection_problem(client: Any, admin: dict[str, str]) -> None:
    url = warehouse_postgres_url()
    bad = url.rsplit("@", 1)[-1] if url else "127.0.0.1:1/x"
    body = {
        "key": "wh-pg",
        "engine": "postgresql",
        "connection": {"url": f"postgresql://no_such_role:wrong@{bad}"},
        "exposures": {"table": "exposures", "columns": dataset.EXPOSURE_COLUMNS},
        "events": {"table": "events", "columns": dataset.EVENT_COLUMNS},
        "timeout_seconds": 10,
    }
    assert client.post("/v1/data-sources", json=body, headers=admin).status_code == 201
    got = problem(
        client.post("/v1/data-sources/wh-pg/test", headers=admin),
        502,
        "data_source_connection_failed",
    )
    assert "PostgreSQL" in got["detail"] and "wrong" not in got["detail"]
    # a password given as an environment variable that is not set
    env = dict(
        body, key="wh-env", connection={"host": "127.0.0.1", "password_env": "TB_NO_SUCH_VARIABLE"}
    )
    assert client.post("/v1/data-sources", json=env, headers=admin).status_code == 201
    got = problem(
        client.post("/v1/data-sources/wh-env/test", headers=admin),
        502,
        "data_source_connection_failed",
    )
    assert "TB_NO_SUCH_VARIABLE" in got["detail"]


def test_a_missing_driver_names_the_extra_to_install(
    client: Any, admin: dict[str, str], duck: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (
        client.post("/v1/data-sources", json=duckdb_source(duck), headers=admin).status_code == 201
    )
    monkeypatch.setitem(sys.modules, "duckdb", None)  # import duckdb now raises ImportError
    got = problem(
        client.post("/v1/data-sources/wh-duck/test", headers=admin), 503, "driver_missing"
    )
    assert "pip install 'trialbook-server[duckdb]'" in got["detail"]


def test_a_connection_field_of_another_engine_is_refused(
    client: Any, admin: dict[str, str], duck: Path
) -> None:
    body = duckdb_source(duck)
    body["connection"] = {"path": str(duck), "master": "local[2]"}
    got = problem(
        client.post("/v1/data-sources", json=body, headers=admin), 422, "validation_error"
    )
    assert got["errors"][0]["field"] == "connection.master"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        # a boolean or a numeric string was taken as a number (the class of bug schemathesis found
        # in expires_in_hours of share links)
        ({"connection": {"threads": True}}, "connection.threads"),
        ({"connection": {"threads": "2"}}, "connection.threads"),
        ({"connection": {"memory_limit_mb": True}}, "connection.memory_limit_mb"),
        ({"connection": {"memory_limit_mb": "512"}}, "connection.memory_limit_mb"),
        ({"connection": {"memory_limit_mb": 10}}, "connection.memory_limit_mb"),
        ({"timeout_seconds": True}, "timeout_seconds"),
        ({"timeout_seconds": "60"}, "timeout_seconds"),
    ],
)
def test_a_number_given_as_a_boolean_or_a_string_is_refused(
    client: Any, admin: dict[str, str], duck: Path, change: dict[str, Any], field: str
) -> None:
    body = duckdb_source(duck)
    for name, value in change.items():
        body[name] = {**body[name], **value} if isinstance(value, dict) else value
    got = problem(
        client.post("/v1/data-sources", json=body, headers=admin), 422, "validation_error"
    )
    assert got["errors"][0]["field"] == field, got
    assert client.get("/v1/data-sources/wh-duck", headers=admin).status_code == 404


# A DuckDB source's rows made by its own SELECTs (range()): 300,000 units, 1.5M events, a
# refresh whose hash tables need some hundreds of MB when unbounded (bench/warehouse.py: 6 GB at
# 10M units), more than 64 MiB can hold even spilling and spilled at 128 MiB.
BIG_UNITS = 300_000
BIG_EXPOSURES = (
    "SELECT 'u' || i AS uid, '{exp}' AS exp_key,"
    " CASE WHEN i % 2 = 0 THEN 'control' ELSE 'treatment' END AS arm,"
    " TIMESTAMPTZ '{base}' + to_seconds(i % 86400) AS seen_at, 'x' || i AS evt_id,"
    " 'DE' AS country_code, 'free' AS plan FROM range({units}) t(i)"
)
BIG_EVENTS = (
    "SELECT 'u' || (i % {units}) AS user_ref,"
    " CASE WHEN i % 3 = 0 THEN 'purchase' ELSE 'visit' END AS ev_name,"
    " CAST(i % 7 AS DOUBLE) AS amount,"
    " TIMESTAMPTZ '{base}' + to_seconds(i % 86400 + 3600) AS happened_at, 'e' || i AS evt_id"
    " FROM range({events}) t(i)"
)


def big_source(path: Path, exp: str, memory_limit_mb: int | None, key: str) -> dict[str, Any]:
    from datetime import UTC, datetime, timedelta

    base = (datetime.now(UTC) - timedelta(days=6)).strftime("%Y-%m-%d %H:%M:%S+00")
    fill = {"exp": exp, "base": base, "units": BIG_UNITS, "events": 5 * BIG_UNITS}
    body = duckdb_source(path, key=key)
    body["connection"] = {"path": str(path), "memory_limit_mb": memory_limit_mb}
    body["exposures"] = {"sql": BIG_EXPOSURES.format(**fill), "columns": dataset.EXPOSURE_COLUMNS}
    body["events"] = {"sql": BIG_EVENTS.format(**fill), "columns": dataset.EVENT_COLUMNS}
    return body


def refresh_past_the_bound(
    client: Any, admin: dict[str, str], body: dict[str, Any], exp: str
) -> str:
    """The detail of the snapshot_failed of ``exp``'s first refresh on the source ``body``."""
    assert client.post("/v1/metrics", json=METRIC, headers=admin).status_code == 201
    assert client.post("/v1/data-sources", json=body, headers=admin).status_code == 201
    r = client.post("/v1/experiments", json=experiment(exp, body["key"]), headers=admin)
    assert r.status_code == 201, r.text
    assert client.post(f"/v1/experiments/{exp}/start", headers=admin).status_code == 200
    got = problem(
        client.get(f"/v1/experiments/{exp}/results", headers=admin), 502, "snapshot_failed"
    )
    assert "connection.memory_limit_mb of 64" in got["detail"], got
    return str(got["detail"])


def test_a_duckdb_source_past_its_memory_bound_is_a_clear_error_naming_the_bound(
    client: Any, admin: dict[str, str], duck: Path
) -> None:
    body = big_source(duck, "exp-oom", 64, "wh-small")
    assert "DuckDB ran out of memory" in refresh_past_the_bound(client, admin, body, "exp-oom")
    # the engine spilled to a directory of its own, never beside the organisation's file
    assert not (duck.parent / (duck.name + ".tmp")).exists()


def spill_refresh() -> tuple[list[Any], Any]:
    """The metrics and window of the bounded-source refreshes below (one binomial, a count, a
    sum: every kind of per-unit value)."""
    from service.analysis.aggregate import MetricSpec, Window

    metrics = [
        MetricSpec("m-buy", "binomial", event="purchase"),
        MetricSpec("m-visits", "mean", event="visit", aggregation="count"),
        MetricSpec("m-amount", "mean", event="purchase"),
    ]
    return metrics, Window(experiment_id=0, phase=1, attribution_window_hours=72.0)


def assert_same_refresh(unbounded: Any, bounded: Any) -> None:
    """The counts and every sufficient statistic of two refreshes equal (rel 1e-12)."""
    assert unbounded[0] == bounded[0] == {"control": 150_000, "treatment": 150_000}
    for metric, per_variant in unbounded[1].items():
        for variant, sums in per_variant.items():
            other = bounded[1][metric][variant]
            for name, value in vars(sums).items():
                assert vars(other)[name] == pytest.approx(value, rel=1e-12), (metric, name)


def watch_spill(spill: Path, spilled: list[int], done: threading.Event) -> None:
    """The most the engine held on disk in ``spill`` until ``done``, into ``spilled[0]``."""
    while not done.wait(0.005):
        with suppress(OSError):
            spilled[0] = max(spilled[0], sum(f.stat().st_size for f in spill.iterdir()))


def test_a_bounded_duckdb_source_spills_and_gives_the_unbounded_numbers(duck: Path) -> None:
    from service.warehouse import engines
    from service.warehouse.source import SourceAggregator, check_columns

    metrics, window = spill_refresh()
    got: dict[int | None, Any] = {}
    for limit in (None, 128):
        body = big_source(duck, "exp-big", limit, "wh-big")
        mapped = {k: v for k, v in body["exposures"]["columns"].items() if k != "attributes"}
        xs = Side(columns=mapped, sql=body["exposures"]["sql"])
        ev = Side(columns=body["events"]["columns"], sql=body["events"]["sql"])
        with engines.connect("wh-big", "duckdb", body["connection"], 120) as conn:
            spill = Path(conn.spill)  # type: ignore[attr-defined]
            setting = engines.run("wh-big", conn, "SELECT current_setting('memory_limit')", 120)[1][
                0
            ][0]
            xs, ev, _found, _probes = check_columns("wh-big", conn, xs, ev, 120)
            agg = SourceAggregator("wh-big", conn, xs, ev, "exp-big", None, 120)
            spilled, done = [0], threading.Event()
            watcher = threading.Thread(target=watch_spill, args=(spill, spilled, done))
            watcher.start()
            try:
                counts, sums = agg.counts_and_sums(metrics, window)
            finally:
                done.set()
                watcher.join()
        assert not spill.exists()  # removed at close
        if limit is None:
            assert spilled[0] == 0
        else:
            assert setting == "128.0 MiB"
            assert spilled[0] > 1_000_000, spilled  # measured here: 40 MB
        got[limit] = (counts.units, sums)
    assert_same_refresh(got[None], got[128])
    assert not (duck.parent / (duck.name + ".tmp")).exists()


# A chdb source's rows made by its own SELECTs (numbers()), as the DuckDB ones above: 300,000
# units and 1.5M events, mapped without event ids (a window over every row would not spill).
# Measured here: unbounded 1.1 s; at 64 and 128 MiB out of memory; at 256 MiB it spills (17
# grouping and 4 join parts written) and answers in 2.2 s.
CH_EXPOSURES = (
    "SELECT concat('u', toString(number)) AS uid, '{exp}' AS exp_key,"
    " if(number % 2 = 0, 'control', 'treatment') AS arm,"
    " toDateTime64('{base}', 6, 'UTC') + toIntervalSecond(number % 86400) AS seen_at"
    " FROM numbers({units})"
)
CH_EVENTS = (
    "SELECT concat('u', toString(number % {units})) AS user_ref,"
    " if(number % 3 = 0, 'purchase', 'visit') AS ev_name, toFloat64(number % 7) AS amount,"
    " toDateTime64('{base}', 6, 'UTC') + toIntervalSecond(number % 86400 + 3600) AS happened_at"
    " FROM numbers({events})"
)


@pytest.fixture
def chdir(tmp_path: Path) -> Path:
    from chdb import session

    from service.warehouse.engines import close_chdb

    close_chdb()
    path = tmp_path / "chdb"
    session.Session(str(path)).close()
    return path


def big_chdb_source(path: Path, exp: str, memory_limit_mb: int | None, key: str) -> dict[str, Any]:
    from datetime import UTC, datetime, timedelta

    base = (datetime.now(UTC) - timedelta(days=6)).strftime("%Y-%m-%d %H:%M:%S")
    fill = {"exp": exp, "base": base, "units": BIG_UNITS, "events": 5 * BIG_UNITS}
    xs = {k: v for k, v in dataset.EXPOSURE_COLUMNS.items() if k not in ("event_id", "attributes")}
    ev = {k: v for k, v in dataset.EVENT_COLUMNS.items() if k != "event_id"}
    return {
        "key": key,
        "engine": "clickhouse",
        "connection": {"path": str(path), "memory_limit_mb": memory_limit_mb},
        "exposures": {"sql": CH_EXPOSURES.format(**fill), "columns": xs},
        "events": {"sql": CH_EVENTS.format(**fill), "columns": ev},
    }


def test_a_chdb_source_past_its_memory_bound_is_a_clear_error_naming_the_bound(
    client: Any, admin: dict[str, str], chdir: Path
) -> None:
    body = big_chdb_source(chdir, "exp-ch-oom", 64, "wh-ch-small")
    detail = refresh_past_the_bound(client, admin, body, "exp-ch-oom")
    assert "ClickHouse ran out of memory" in detail


def test_a_bounded_chdb_source_spills_and_gives_the_unbounded_numbers(chdir: Path) -> None:
    from service.warehouse import engines
    from service.warehouse.source import SourceAggregator, check_columns

    metrics, window = spill_refresh()
    spilled_parts = (
        "SELECT toInt64(sum(value)) FROM system.events"
        " WHERE event IN ('ExternalAggregationWritePart', 'ExternalJoinWritePart')"
    )
    got: dict[int | None, Any] = {}
    for limit in (None, 256):
        body = big_chdb_source(chdir, "exp-ch-big", limit, "wh-ch-big")
        xs = Side(columns=body["exposures"]["columns"], sql=body["exposures"]["sql"])
        ev = Side(columns=body["events"]["columns"], sql=body["events"]["sql"])
        with engines.connect("wh-ch-big", "clickhouse", body["connection"], 120) as conn:
            xs, ev, _found, _probes = check_columns("wh-ch-big", conn, xs, ev, 120)
            agg = SourceAggregator("wh-ch-big", conn, xs, ev, "exp-ch-big", None, 120)
            before = engines.run("wh-ch-big", conn, spilled_parts, 60)[1][0][0] or 0
            counts, sums = agg.counts_and_sums(metrics, window)
            after = engines.run("wh-ch-big", conn, spilled_parts, 60)[1][0][0] or 0
        if limit is None:
            assert after == before  # nothing written to disk
        else:
            assert after - before >= 2, (before, after)  # measured here: 21 parts
        got[limit] = (counts.units, sums)
    assert_same_refresh(got[None], got[256])
