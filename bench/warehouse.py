"""Warehouse-native refresh speed (issue 15): the §6 aggregation where the data lives.

    .venv/bin/python bench/warehouse.py                       # 1M units / 5M events, quick
    .venv/bin/python bench/warehouse.py --units 10000000      # the promised figure (10M / 50M)
    .venv/bin/python bench/warehouse.py --units 200000 --engines duckdb,clickhouse,spark

For each size the data (``--events-per-unit`` conversions per unit, 5 metric events, first
exposures over 14 days, conversions from 16 days before to 5 days after, as bench/results.py)
is generated inside DuckDB and written to a DuckDB file; ClickHouse (chdb) and Spark read the
same rows from Parquet files. Printed per engine:

- the **refresh**: what a snapshot of the bench experiment (5 metrics: binomial, mean, count,
  ratio, a guardrail; CUPED, a 72 h window) asks the source — the unit counts and the
  per-variant sums, in one statement (``SourceAggregator.counts_and_sums``), best of
  ``--repeat``;
- beside it a **bare scan** of the same two tables in the same engine, reading every column
  the refresh reads (the smallest or largest unit, variant or name, time, experiment; the sum of
  the values), and the ratio refresh / scan;
- a **join floor**: the least any per-unit analysis does, every event joined to its unit's
  exposure and summed per unit (one aggregate), and the ratio refresh / floor;
- the Python heap's peak during the refresh (``tracemalloc``: what came back to the service
  process is a few rows whatever the size) and the process's peak RSS (the in-process engines'
  memory is there too: DuckDB's is bounded by the source's ``connection.memory_limit_mb``, here
  ``--duckdb-memory-limit-mb``; without it DuckDB takes what the refresh needs, up to 80 % of
  the RAM; the peak through the DuckDB figures is printed apart, the data generated in a
  process of its own).

The built-in SQLite store's refresh of the same experiment at ``--sqlite-units`` (default 1M)
runs in the same process for the ratio (bench/results.py loads it). ``--sqlite-units 0`` skips it.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.analysis.aggregate import MetricSpec, Window  # noqa: E402
from service.analysis.query import Side, epoch_us  # noqa: E402
from service.warehouse import engines  # noqa: E402
from service.warehouse.source import SourceAggregator, check_columns  # noqa: E402

EXPERIMENT = "bench-warehouse"
METRICS = [
    MetricSpec("m-signup", "binomial", event="ev0"),
    MetricSpec("m-revenue", "mean", event="ev1"),
    MetricSpec("m-views", "mean", event="ev2", aggregation="count"),
    MetricSpec("m-aov", "ratio", numerator_event="ev3", denominator_event="ev4"),
    MetricSpec("m-cost", "mean", event="ev4"),
]
EXPOSURES = Side(
    columns={
        "unit_id": "unit_id",
        "experiment": "experiment",
        "variant": "variant",
        "timestamp": "ts",
    },
    table="exposures",
)
EVENTS = Side(
    columns={"unit_id": "unit_id", "name": "name", "value": "value", "timestamp": "ts"},
    table="events",
)
START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=14)
SPREAD_S = 14 * 86_400


def generate(path: Path, units: int, per_unit: int, memory: str) -> None:
    """The bench rows in a DuckDB file (the formulas of bench/results.py's loader)."""
    import duckdb

    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    con.execute(f"SET memory_limit = '{memory}'")
    base = START.strftime("%Y-%m-%d %H:%M:%S")
    con.execute(
        "CREATE TABLE exposures AS SELECT 'u' || i AS unit_id, "
        f"'{EXPERIMENT}' AS experiment,"
        " CASE (i * 2654435761) % 3 WHEN 0 THEN 'control' WHEN 1 THEN 'b' ELSE 'c' END AS variant,"
        f" TIMESTAMPTZ '{base}+00' + to_microseconds(((i * 7919) % {SPREAD_S}) * 1000000"
        " + i % 1000000) AS ts"
        f" FROM range({units}) t(i)"
    )
    con.execute(
        f"CREATE TABLE events AS SELECT 'u' || (i % {units}) AS unit_id,"
        f" 'ev' || CAST(i // {units} % 5 AS VARCHAR) AS name,"
        " CAST((i * 48271) % 1000 AS DOUBLE) / 10.0 AS value,"
        f" TIMESTAMPTZ '{base}+00' + to_microseconds(((((i % {units}) * 7919) % {SPREAD_S})"
        " + ((i * 104729) % 1814400) - 1382400) * 1000000 + 500000) AS ts"
        f" FROM range({units * per_unit}) t(i)"
    )
    con.close()


def window() -> Window:
    return Window(experiment_id=0, phase=1, attribution_window_hours=72.0, pre_period_days=14)


def refresh(agg: SourceAggregator) -> int:
    """What the analysis asks the source (service.analysis.service.analyse): the counts and the
    sums in one statement, or (a winsorized metric) the counts, then the sums."""
    counts, sums = agg.counts_and_sums(METRICS, window())
    n = sum(counts.units.values())
    if sums is None:
        sums = agg.variant_sums(METRICS, window(), n, list(counts.units))
    return n + len(sums)


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    out, fastest = None, float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        fastest = min(fastest, time.perf_counter() - t0)
    return fastest, out


def scan_of(side: Side, label: str) -> str:
    """A bare scan of a side's table that reads every column the refresh reads (the unit and
    the label as strings, the time, the value): each column's smallest or largest value."""
    c = side.columns
    reads = [
        "COUNT(*)",
        f"MIN({c['unit_id']})",
        f"MAX({c[label]})",
        f"MAX({c['timestamp']})",
        f"MIN({c['experiment']})" if "experiment" in c else f"SUM({c['value']})",
    ]
    return f"SELECT {', '.join(reads)} FROM {side.table}"


def floor_of(xs: Side, ev: Side) -> str:
    """The least any per-unit analysis does: every event joined to its unit's exposure and
    summed per unit (one aggregate, no window, no variant, no pre-period)."""
    u, e = xs.columns["unit_id"], ev.columns["unit_id"]
    return (
        f"SELECT COUNT(*), SUM(t.s) FROM (SELECT e.{e} AS u, SUM(e.{ev.columns['value']}) AS s"
        f" FROM {ev.table} e JOIN {xs.table} x ON x.{u} = e.{e} GROUP BY e.{e}) t"
    )


def measure(
    name: str, engine: str, connection: dict[str, Any], xs: Side, ev: Side, repeat: int
) -> dict[str, float]:
    with engines.connect(f"bench-{name}", engine, connection, 3600) as conn:
        xs, ev, _found, _probes = check_columns(f"bench-{name}", conn, xs, ev, 3600)
        agg = SourceAggregator(f"bench-{name}", conn, xs, ev, EXPERIMENT, epoch_us(START), 3600)
        scan_sql = [scan_of(xs, "variant"), scan_of(ev, "name")]

        def scan() -> None:
            for sql in scan_sql:
                engines.run(f"bench-{name}", conn, sql, 3600)

        scan_s, _ = best(scan, repeat)
        floor = floor_of(xs, ev)
        floor_s, _ = best(lambda: engines.run(f"bench-{name}", conn, floor, 3600), repeat)
        tracemalloc.start()
        refresh_s, _ = best(lambda: refresh(agg), repeat)
        _cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return {"refresh": refresh_s, "scan": scan_s, "floor": floor_s, "heap_mb": peak / 1e6}


def sqlite_store(units: int, repeat: int) -> float:
    """The built-in store (SQLite) refresh of the same experiment shape, as bench/results.py."""
    spec = importlib.util.spec_from_file_location("bench_results", REPO / "bench" / "results.py")
    assert spec is not None and spec.loader is not None
    results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(results)
    tmp = Path(tempfile.mkdtemp(prefix="tb-bench-wh-"))
    try:
        engine, client = results._setup(f"sqlite:///{tmp / 'store.db'}")
        with client:  # the lifespan creates the bootstrap admin key
            results._protocol(client, "bench-store")
        from sqlmodel import Session, select

        from service.analysis.aggregate import StoreAggregator
        from service.experiments.models import Experiment

        with Session(engine) as session:
            exp = session.exec(select(Experiment).where(Experiment.key == "bench-store")).one()
            exp_id = exp.id
        results._load(engine, exp_id, units)

        def run() -> None:
            with Session(engine) as session:
                store = StoreAggregator(session)
                w = Window(
                    experiment_id=exp_id, phase=1, attribution_window_hours=72.0, pre_period_days=14
                )
                counts = store.count_exposures(w)
                n = sum(counts.units.values())
                store.variant_sums(METRICS, w, n, list(counts.units))

        seconds, _ = best(run, repeat)
        engine.dispose()
        return seconds
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1_000_000, help="units (default 1M)")
    parser.add_argument("--events-per-unit", type=int, default=5, help="conversions per unit")
    parser.add_argument("--engines", default="duckdb,clickhouse,spark", help="comma-separated")
    parser.add_argument(
        "--sqlite-units", type=int, default=1_000_000, help="built-in store size; 0 skips"
    )
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per figure (best kept)")
    parser.add_argument(
        "--duckdb-memory", default="4GB", help="DuckDB memory_limit while generating the data"
    )
    parser.add_argument(
        "--duckdb-memory-limit-mb",
        type=int,
        default=None,
        help="the DuckDB source's connection.memory_limit_mb (default: none, DuckDB's own)",
    )
    parser.add_argument(
        "--chdb-memory-limit-mb",
        type=int,
        default=None,
        help="the chdb source's connection.memory_limit_mb (default: none, the engine's own)",
    )
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads")
    args = parser.parse_args()
    wanted = args.engines.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="tb-bench-wh-"))
    try:
        db = tmp / "warehouse.duckdb"
        t0 = time.perf_counter()
        # in a process of its own, so that the peak RSS printed is the measurements' alone
        gen = multiprocessing.get_context("spawn").Process(
            target=generate, args=(db, args.units, args.events_per_unit, args.duckdb_memory)
        )
        gen.start()
        gen.join()
        if gen.exitcode != 0:
            raise SystemExit(f"generating the data failed (exit {gen.exitcode})")
        n_events = args.units * args.events_per_unit
        print(
            f"{args.units:,} units / {n_events:,} events generated in {time.perf_counter() - t0:.1f} s"  # noqa: E501
        )
        rows: list[tuple[str, dict[str, float]]] = []
        duck_rss_mb: float | None = None
        if "duckdb" in wanted:
            rows.append(
                (
                    "duckdb",
                    measure(
                        "duckdb",
                        "duckdb",
                        {
                            "path": str(db),
                            "threads": args.threads,
                            "memory_limit_mb": args.duckdb_memory_limit_mb,
                        },
                        EXPOSURES,
                        EVENTS,
                        args.repeat,
                    ),
                )
            )
            duck_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        parquet: tuple[Path, Path] | None = None
        if "clickhouse" in wanted or "spark" in wanted:
            import duckdb

            con = duckdb.connect(str(db), read_only=True)
            parquet = (tmp / "exposures.parquet", tmp / "events.parquet")
            con.execute(f"COPY exposures TO '{parquet[0]}' (FORMAT parquet)")
            con.execute(f"COPY events TO '{parquet[1]}' (FORMAT parquet)")
            con.close()
        if "clickhouse" in wanted and parquet is not None:
            from chdb import session

            engines.close_chdb()
            chdir = tmp / "chdb"
            s = session.Session(str(chdir))
            s.query("CREATE DATABASE IF NOT EXISTS wh")
            for name, path in (("exposures", parquet[0]), ("events", parquet[1])):
                s.query(
                    f"CREATE TABLE wh.{name} ENGINE = MergeTree ORDER BY tuple() AS SELECT * FROM file('{path}', Parquet)"  # noqa: E501
                )
            s.close()
            ch_xs = Side(columns=EXPOSURES.columns, table="wh.exposures")
            ch_ev = Side(columns=EVENTS.columns, table="wh.events")
            rows.append(
                (
                    "clickhouse (chdb)",
                    measure(
                        "chdb",
                        "clickhouse",
                        {"path": str(chdir), "memory_limit_mb": args.chdb_memory_limit_mb},
                        ch_xs,
                        ch_ev,
                        args.repeat,
                    ),
                )
            )
        if "spark" in wanted and parquet is not None:
            conn = {
                "master": "local[2]",
                "files": {"exposures": str(parquet[0]), "events": str(parquet[1])},
            }
            rows.append(
                ("spark local[2]", measure("spark", "spark", conn, EXPOSURES, EVENTS, args.repeat))
            )
        sqlite_s = sqlite_store(args.sqlite_units, args.repeat) if args.sqlite_units else None
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"\n{'engine':<20}{'refresh s':>11}{'bare scan s':>13}{'ratio':>8}"
            f"{'join floor s':>14}{'ratio':>8}{'py heap MB':>12}"
        )
        for name, m in rows:
            print(
                f"{name:<20}{m['refresh']:>11.2f}{m['scan']:>13.2f}{m['refresh'] / m['scan']:>8.2f}"
                f"{m['floor']:>14.2f}{m['refresh'] / m['floor']:>8.2f}{m['heap_mb']:>12.2f}"
            )
        if sqlite_s is not None:
            print(
                f"{'built-in SQLite':<20}{sqlite_s:>11.2f}   at {args.sqlite_units:,} units / {args.sqlite_units * 5:,} events"  # noqa: E501
            )
            duck = next((m for name, m in rows if name == "duckdb"), None)
            if duck is not None:
                scale = args.units / args.sqlite_units
                print(
                    f"DuckDB at {args.units:,} units vs the built-in SQLite store at {args.sqlite_units:,}:"  # noqa: E501
                    f" {scale:g}x the data in {duck['refresh'] / sqlite_s:.2f}x the time,"
                    f" {sqlite_s * scale / duck['refresh']:.1f}x faster per unit"
                )
        limit = args.duckdb_memory_limit_mb
        if duck_rss_mb is not None:
            print(
                f"process peak RSS through the DuckDB figures {duck_rss_mb:,.0f} MB (the source's"
                f" memory_limit_mb {limit or 'not set: DuckDB takes up to 80 % of the RAM'})"
            )
        print(f"process peak RSS {rss_mb:,.0f} MB (every in-process engine included)")
    finally:
        engines.close_chdb()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
