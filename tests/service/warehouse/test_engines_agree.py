"""The same events analysed on every live engine give the built-in store's numbers.

One synthetic dataset (tests/service/warehouse/dataset.py) is ingested through ``/v1/events``
on a live server (the built-in store) and loaded into a SQLite file, a DuckDB file, a chdb
(ClickHouse) data directory, Parquet files read by Spark local, and PostgreSQL (when a server is
given, see conftest). An experiment per engine names its data source; its results over HTTP —
every metric's arms and comparisons, CUPED, the slices, the series — equal the built-in
experiment's (rel 1e-9), and the sufficient statistics agree engine by engine.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import wh_dataset as dataset
from numpy.testing import assert_allclose
from wh_dataset import warehouse_postgres_url

REL = 1e-9
METRICS = [
    {"key": "conversion", "name": "Conversion", "type": "binomial", "event": "purchase"},
    {
        "key": "revenue",
        "name": "Revenue",
        "type": "mean",
        "event": "purchase",
        "winsorize_lower": 0.05,
        "winsorize_upper": 0.95,
    },
    {"key": "visits", "name": "Visits", "type": "mean", "event": "visit", "aggregation": "count"},
    {
        "key": "rpv",
        "name": "Revenue per visit",
        "type": "ratio",
        "numerator_event": "purchase",
        "denominator_event": "visit",
    },
    {"key": "p90", "name": "Revenue p90", "type": "quantile", "event": "purchase", "quantile": 0.9},
]


def protocol(key: str, source: str | None, dimensions: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": key,
        "title": "Checkout",
        "owner": "pm@example.com",
        "hypothesis": "The new checkout raises purchases",
        "variants": [
            {"key": "control", "weight": 0.5, "is_control": True},
            {"key": "treatment", "weight": 0.5},
        ],
        "primary_metric": {"metric": "conversion", "mde": 0.1},
        "secondary_metrics": ["revenue", "visits", "rpv", "p90"],
        "baseline": {"rate": 0.3},
        "attribution_window_hours": dataset.WINDOW_HOURS,
        "overrides": dataset.OVERRIDES,
        "dimensions": ["country", "plan"] if dimensions else [],
    }
    if source is not None:
        body["data_source"] = source
    return body


def mapping(engine: str, where: Path, pg_url: str | None) -> dict[str, Any]:
    """A data source per engine: the columns mapped, SQL-defined sides where the engine has them."""
    xs = {"columns": dataset.EXPOSURE_COLUMNS}
    ev = {"columns": dataset.EVENT_COLUMNS}
    if engine == "duckdb":  # exposures: a SELECT over a view
        conn: dict[str, Any] = {"path": str(where / "wh.duckdb")}
        xs |= {"sql": "SELECT * FROM exposures"}
        ev |= {"table": "events"}
    elif engine == "sqlite":  # events: a join of two tables
        conn = {"path": str(where / "wh.sqlite")}
        xs |= {"table": "exposures"}
        ev |= {"sql": dataset.SQLITE_EVENTS_SQL}
    elif engine == "clickhouse":
        conn = {"path": str(where / "chdb")}
        xs |= {"table": "wh.exposures"}
        ev |= {"table": "wh.events"}
    elif engine == "spark":
        conn = {
            "master": "local[2]",
            "files": {
                "exposures": str(where / "parquet" / "exposures.parquet"),
                "events": str(where / "parquet" / "events.parquet"),
            },
        }
        xs |= {"table": "exposures"}
        ev |= {"table": "events"}
    else:
        assert pg_url is not None
        conn = {"url": pg_url}
        xs |= {"table": "wh_src.exposures"}
        ev |= {"table": "wh_src.events"}
    return {
        "key": f"wh-{engine}",
        "engine": engine,
        "connection": conn,
        "exposures": xs,
        "events": ev,
        "timeout_seconds": 240 if engine == "spark" else 60,
    }


VOLATILE = {"computed_at", "snapshot_id", "data_until", "experiment", "until", "status"}


def leaves(obj: Any, path: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k not in VOLATILE:
                out |= leaves(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out |= leaves(v, f"{path}[{i}]")
    else:
        out[path] = obj
    return out


def assert_same(got: dict[str, Any], want: dict[str, Any], what: str) -> None:
    a, b = leaves(got), leaves(want)
    assert sorted(a) == sorted(b), f"{what}: {set(a) ^ set(b)}"
    for path, x in b.items():
        y = a[path]
        if isinstance(x, float) and isinstance(y, int | float) and not isinstance(y, bool):
            if math.isnan(x):
                assert math.isnan(y), f"{what} {path}"
            else:
                assert_allclose(y, x, rtol=REL, atol=1e-12, err_msg=f"{what} {path}")
        else:
            assert y == x, f"{what} {path}: {y!r} != {x!r}"


@pytest.mark.slow
def test_every_live_engine_analyses_the_dataset_as_the_built_in_store_does(
    live: Any, keys: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    admin, sdk = keys["admin"], keys["sdk"]
    data = dataset.rows()
    pg_url = warehouse_postgres_url()
    engines = ["sqlite", "duckdb", "clickhouse", *(["postgresql"] if pg_url else []), "spark"]
    for m in METRICS:
        assert live.post("/v1/metrics", json=m, headers=admin).status_code == 201
    # the built-in store: the events through /v1/events
    dataset.start_in_store(live, protocol("wh-builtin", None), data, admin, sdk)
    # the warehouses: the same rows, the experiment under each engine's key
    dataset.load_sqlite(tmp_path / "wh.sqlite", data, "wh-sqlite")
    dataset.load_duckdb(tmp_path / "wh.duckdb", data, "wh-duckdb")
    dataset.load_chdb(tmp_path / "chdb", data, "wh-clickhouse")
    dataset.load_parquet(tmp_path / "parquet", data, "wh-spark")
    if pg_url:
        dataset.load_postgres(pg_url, "wh_src", data, "wh-postgresql")
    for engine in engines:
        r = live.post("/v1/data-sources", json=mapping(engine, tmp_path, pg_url), headers=admin)
        assert r.status_code == 201, r.text
        r = live.post(f"/v1/data-sources/wh-{engine}/test", headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["ok"] is True
        # Spark local takes seconds per statement: its experiment has no slices (a dozen
        # statements fewer); the slices are the same statements on every other engine.
        body = protocol(f"wh-{engine}", f"wh-{engine}", dimensions=engine != "spark")
        r = live.post("/v1/experiments", json=body, headers=admin)
        assert r.status_code == 201, r.text
        assert r.json()["data_source"] == f"wh-{engine}"
        assert live.post(f"/v1/experiments/wh-{engine}/start", headers=admin).status_code == 200

    want = live.get("/v1/experiments/wh-builtin/results", headers=admin).json()
    want_series = live.get("/v1/experiments/wh-builtin/results/timeseries", headers=admin).json()
    # the dataset exercises what it claims to
    assert want["multiple_exposures"] > 0 and want["overridden_units"] == 2
    assert want["slices"] is not None
    revenue = next(m for m in want["metrics"] if m["metric"] == "revenue")
    assert revenue["winsorized"] is True
    assert revenue["comparisons"][0]["cuped"] is not None
    # data_until: the newest exposure or event the source holds (not the built-in store's)
    newest = max(
        r.ts
        for r in data
        if r.unit is not None and (r.variant is not None or r.kind == "conversion")
    )
    for engine in engines:
        got = live.get(f"/v1/experiments/wh-{engine}/results", headers=admin)
        assert got.status_code == 200, (engine, got.text)
        until = datetime.fromisoformat(got.json()["data_until"].replace("Z", "+00:00"))
        assert until == newest, engine
        if engine == "spark":
            assert got.json()["slices"] is None
            assert_same(got.json() | {"slices": None}, want | {"slices": None}, engine)
        else:
            assert_same(got.json(), want, engine)
        series = live.get(f"/v1/experiments/wh-{engine}/results/timeseries", headers=admin)
        assert series.status_code == 200, series.text
        assert_same(series.json()["points"], want_series["points"], f"{engine} series")


@pytest.mark.parametrize("kind", ["sqlite", "duckdb", "clickhouse"])
def test_the_sufficient_statistics_agree_with_the_built_in_store_at_a_time_cut(
    kind: str, client: Any, keys: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    """The aggregator itself, at a cut inside the data (the series' day cut): counts, sums of
    every metric with CUPED and caps, slice sums and quantile order statistics."""
    from datetime import timedelta

    from sqlmodel import Session

    from service.analysis.aggregate import StoreAggregator, Window
    from service.analysis.query import epoch_us
    from service.analysis.service import analysis_window, metric_specs
    from service.db import get_engine
    from service.experiments.service import get_row
    from service.warehouse.models import DataSource
    from service.warehouse.source import SourceAggregator, open_source

    admin, sdk = keys["admin"], keys["sdk"]
    data = dataset.rows(n_units=90, seed=11)
    for m in METRICS:
        assert client.post("/v1/metrics", json=m, headers=admin).status_code == 201
    dataset.start_in_store(client, protocol("wh-builtin", None), data, admin, sdk)
    body = mapping(kind, tmp_path, None)
    {"sqlite": dataset.load_sqlite, "duckdb": dataset.load_duckdb, "clickhouse": dataset.load_chdb}[
        kind
    ](
        tmp_path / {"sqlite": "wh.sqlite", "duckdb": "wh.duckdb", "clickhouse": "chdb"}[kind],
        data,
        "wh-builtin",
    )
    row = DataSource(
        key=body["key"],
        engine=kind,
        connection=body["connection"],
        exposures=body["exposures"],
        events=body["events"],
    )
    cut = min(r.ts for r in data if r.kind == "exposure") + timedelta(days=2, hours=3)
    with Session(get_engine()) as session:
        exp = get_row(session, "wh-builtin")
        window: Window = analysis_window(session, exp, until=cut)
        specs = [s for s in metric_specs(session, exp) if s.type != "quantile"]
        quantiles = [s for s in metric_specs(session, exp) if s.type == "quantile"]
        store = StoreAggregator(session)
        with open_source(row) as (conn, xs, ev):
            src = SourceAggregator(row.key, conn, xs, ev, "wh-builtin", epoch_us(cut), 60.0)
            want_counts, got_counts = store.count_exposures(window), src.count_exposures(window)
            assert got_counts.multiple_exposures == want_counts.multiple_exposures > 0
            assert got_counts.overridden_units == want_counts.overridden_units
            assert {k: v for k, v in got_counts.units.items() if v} == {
                k: v for k, v in want_counts.units.items() if v
            }
            n = sum(want_counts.units.values())
            want = store.variant_sums(specs, window, n)
            got = src.variant_sums(specs, window, n)
            for key, per in want.items():
                for variant, sums in per.items():
                    assert got[key][variant].n == sums.n
                    for name, x in sums.sums.items():
                        assert_allclose(
                            got[key][variant].sums[name],
                            x,
                            rtol=REL,
                            atol=1e-12,
                            err_msg=f"{key} {variant} {name}",
                        )
            # the counts and the sums of the unwinsorized metrics in one statement: the same
            plain = [s for s in specs if not s.winsorized]
            assert plain and len(plain) < len(specs)
            one_counts, one_sums = src.counts_and_sums(plain, window)
            assert one_counts == got_counts and one_sums is not None
            want_plain = store.variant_sums(plain, window, n)
            assert sorted(one_sums) == sorted(want_plain)
            for key, per in want_plain.items():
                assert sorted(one_sums[key]) == sorted(per)
                for variant, sums in per.items():
                    assert one_sums[key][variant].n == sums.n
                    for name, x in sums.sums.items():
                        assert_allclose(one_sums[key][variant].sums[name], x, rtol=REL, atol=1e-12)
            # a winsorized metric's cut points need the counts first: the counts alone
            assert src.counts_and_sums(specs, window) == (got_counts, None)
            dims = (("country", ("fr", "de")), ("plan", ("pro",)))
            from dataclasses import replace

            sliced = replace(window, dimensions=dims)
            want_s, got_s = store.slice_sums(specs, sliced, n), src.slice_sums(specs, sliced, n)
            assert sorted(got_s) == sorted(want_s)
            for combo, per_metric in want_s.items():
                for key, per in per_metric.items():
                    for variant, sums in per.items():
                        for name, x in sums.sums.items():
                            assert_allclose(
                                got_s[combo][key][variant].sums[name], x, rtol=REL, atol=1e-12
                            )
            assert src.slice_counts(window, "country") == store.slice_counts(window, "country")
            ranks = {
                v: {"p90": (1, 2, max(1, k - 1), k)} for v, k in want_counts.units.items() if k
            }
            assert src.quantile_order_statistics(
                quantiles, window, ranks
            ) == store.quantile_order_statistics(quantiles, window, ranks)
            # per slice: the order statistics of the slice's units (ranks within the bucket)
            slice_ranks = {
                (k, value): {v: {"p90": (1, 2, 3)} for v in want_counts.units}
                for k, values in enumerate((("fr", "de", "other", "unknown"), ("pro", "other")))
                for value in values
            }
            got_q = src.slice_order_statistics(quantiles, sliced, slice_ranks)
            assert got_q == store.slice_order_statistics(quantiles, sliced, slice_ranks)
            read = [r for per in got_q.values() for r in per["p90"].values()]
            assert len(read) >= 8 and all(set(r) <= {1, 2, 3} for r in read)
            assert sum(len(r) == 3 for r in read) >= 8


@pytest.mark.slow
def test_an_experiment_without_winsorization_reads_counts_and_sums_in_one_statement_and_agrees(
    live: Any, keys: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    """No winsorized metric: a source's analysis reads the unit counts and the sums in one
    statement (``counts_and_sums``); the results and the series are the built-in store's."""
    admin, sdk = keys["admin"], keys["sdk"]
    data = dataset.rows(seed=11)
    for m in METRICS:
        assert live.post("/v1/metrics", json=m, headers=admin).status_code == 201

    def plain(key: str, source: str | None) -> dict[str, Any]:
        body = protocol(key, source, dimensions=False)
        return body | {"secondary_metrics": ["visits", "rpv", "p90"]}

    dataset.start_in_store(live, plain("one-builtin", None), data, admin, sdk)
    dataset.load_duckdb(tmp_path / "wh.duckdb", data, "wh-duckdb")
    dataset.load_chdb(tmp_path / "chdb", data, "wh-clickhouse")
    engines = ["duckdb", "clickhouse"]
    for engine in engines:
        r = live.post("/v1/data-sources", json=mapping(engine, tmp_path, None), headers=admin)
        assert r.status_code == 201, r.text
        r = live.post("/v1/experiments", json=plain(f"wh-{engine}", f"wh-{engine}"), headers=admin)
        assert r.status_code == 201, r.text
        assert live.post(f"/v1/experiments/wh-{engine}/start", headers=admin).status_code == 200
    want = live.get("/v1/experiments/one-builtin/results", headers=admin).json()
    want_series = live.get("/v1/experiments/one-builtin/results/timeseries", headers=admin).json()
    assert want["multiple_exposures"] > 0 and want["overridden_units"] == 2
    for engine in engines:
        got = live.get(f"/v1/experiments/wh-{engine}/results", headers=admin)
        assert got.status_code == 200, (engine, got.text)
        assert_same(got.json(), want, engine)
        series = live.get(f"/v1/experiments/wh-{engine}/results/timeseries", headers=admin)
        assert series.status_code == 200, series.text
        assert_same(series.json()["points"], want_series["points"], f"{engine} series")
