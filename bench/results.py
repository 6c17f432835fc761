"""Bench: results of one experiment from raw events — 3 variants, 5 metrics, CUPED on, a 72 h
attribution window — at 100,000 and 1,000,000 exposed units with 5 conversions per unit.

Run::

    .venv/bin/python bench/results.py                       # SQLite (scratch file in /tmp)
    .venv/bin/python bench/results.py --postgres URL        # PostgreSQL: URL must be a SCRATCH
                                                             # database; its tables are emptied

Rows are bulk-loaded with SQL (``INSERT … SELECT`` over a generated series; deterministic
arithmetic on the row number, no randomness), not through HTTP. For each size it prints the wall
time of ``compute_results`` (best of ``--repeat`` runs) beside the floor measured in the same run:
a bare ``SELECT name, COUNT(*), SUM(value) FROM conversion GROUP BY name`` over the same
conversions. Targets at 1,000,000 units / 5,000,000 conversions: < 5 s on SQLite, < 3 s on
PostgreSQL. The last column is the 1-minute load average after the timings (the machine is shared:
read the figures beside it). On PostgreSQL the tables are vacuumed after the load, as autovacuum
does after a bulk insert.

Snapshots (issue 14, ``product.md`` §12), in the same run, second line per size. The protocol slices
by two dimensions (``country``: 14 values, 10 kept and ``other``; ``platform``: 3 values and
``unknown``), the phase is backdated so that the first exposures span its 14 days (the 14th still
under way). Printed: the p50 of 50 ``GET …/results`` through HTTP (in-process ASGI client) once a
snapshot is stored, beside the recompute time of the first table, the same GET with the snapshot's
stored response removed and the read path's memo emptied after every read (the model decoded,
validated and serialized per read, as before migration 0008) and ``GET /healthz`` (the client's
floor); the plain refresh (the analysis stored, no series, no slices); the refresh with the two
dimensions; the first refresh with the 14-day series and the dimensions (the backfill: 13 finished
days computed); and that refresh once the finished days are stored (the steady state of the hourly
schedule), with its ratio to the plain refresh (target <= 3x). Targets at 1M units: GET <= 50 ms
p50.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ADMIN = "tb-bench-admin-key-0123456789abcdef0123456789"
EVENTS = ("ev0", "ev1", "ev2", "ev3", "ev4")
CONVERSIONS_PER_UNIT = 5
# The phase started 14 days less 2 hours ago: a 14-point series whose 14th day is still under way
# for the whole run (its point is the refresh's own analysis; days 1-13 are final once computed).
# The first exposures are spread from the start to now.
_MARGIN = timedelta(hours=2)
_START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=14) + _MARGIN
BASE = _START.strftime("%Y-%m-%d %H:%M:%S")
SPREAD_S = 14 * 86_400 - int(_MARGIN.total_seconds())
# Two slicing dimensions (product.md §12): `country`, 14 values (10 kept, the rest `other`), and
# `platform`, 3 values, missing on 1 unit in 50 (`unknown`).
DIMENSIONS = ["country", "platform"]


def _setup(url: str) -> tuple[Any, Any]:
    os.environ["TRIALBOOK_DATABASE_URL"] = url
    os.environ["TRIALBOOK_BOOTSTRAP_ADMIN_KEY"] = ADMIN
    # No background health checks or scheduled refreshes: they would take the experiment's
    # refresh claim (and SQLite's write lock during the bulk load) in the middle of a timing.
    os.environ["TRIALBOOK_CHECK_INTERVAL_SECONDS"] = "0"
    os.environ["TRIALBOOK_REFRESH_INTERVAL_SECONDS"] = "0"
    from service import db
    from service.config import get_settings
    from service.migrate import upgrade

    get_settings.cache_clear()
    db.get_engine.cache_clear()
    engine = db.get_engine()
    if engine.dialect.name == "postgresql":
        from sqlalchemy import text

        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    upgrade(url)
    from fastapi.testclient import TestClient

    from service.main import create_app

    return engine, TestClient(create_app())


def _protocol(client: Any, key: str) -> None:
    h = {"Authorization": f"Bearer {ADMIN}"}
    metrics: list[dict[str, Any]] = [
        {"key": "m-signup", "type": "binomial", "event": "ev0"},
        {"key": "m-revenue", "type": "mean", "event": "ev1"},
        {"key": "m-views", "type": "mean", "event": "ev2", "aggregation": "count"},
        {"key": "m-aov", "type": "ratio", "numerator_event": "ev3", "denominator_event": "ev4"},
        {"key": "m-cost", "type": "mean", "event": "ev4", "higher_is_better": False},
    ]
    for m in metrics:
        if client.get(f"/v1/metrics/{m['key']}", headers=h).status_code == 404:
            r = client.post("/v1/metrics", json=m | {"name": m["key"]}, headers=h)
            assert r.status_code == 201, r.text
    body = {
        "key": key,
        "title": "bench",
        "owner": "bench",
        "hypothesis": "bench",
        "variants": [
            {"key": "control", "weight": 0.34, "is_control": True},
            {"key": "b", "weight": 0.33},
            {"key": "c", "weight": 0.33},
        ],
        "primary_metric": {"metric": "m-signup", "mde": 0.05},
        "baseline": {"rate": 0.3},
        "secondary_metrics": ["m-revenue", "m-views", "m-aov"],
        "guardrails": [{"metric": "m-cost", "margin": 0.05}],
        "attribution_window_hours": 72.0,
        "analysis": {"cuped": True, "pre_period_days": 14},
        "dimensions": DIMENSIONS,
    }
    r = client.post("/v1/experiments", json=body, headers=h)
    assert r.status_code == 201, r.text
    r = client.post(f"/v1/experiments/{key}/start", headers=h)
    assert r.status_code == 200, r.text


def _load(engine: Any, exp_id: int, units: int) -> None:
    """Bulk load ``units`` exposure_unit rows and 5 conversions per unit, in SQL."""
    from sqlalchemy import text

    n_conv = units * CONVERSIONS_PER_UNIT
    pg = engine.dialect.name == "postgresql"
    # unit i: variant by a multiplicative hash, first exposure spread over SPREAD_S seconds.
    # conversion j: unit j % units, event j // units (one of 5), offset in [-16 d, +5 d) from
    # the unit's first exposure, so some fall before the pre-period and some after the window.
    offset_s = "((i * 104729) % 1814400) - 1382400"  # seconds, in [-16 d, +5 d)
    unit_s = f"((i * 7919) % {SPREAD_S})"
    conv_unit_s = f"(((i % {units}) * 7919) % {SPREAD_S})"
    if pg:
        series = "generate_series(0::bigint, {n} - 1) AS g(i)"
        base = f"TIMESTAMPTZ '{BASE}+00'"
        unit_ts = (
            f"({base} + {unit_s} * INTERVAL '1 second' + (i % 1000000) * INTERVAL '1 microsecond')"
        )
        conv_ts = (
            f"({base} + ({conv_unit_s} + {offset_s}) * INTERVAL '1 second'"
            " + INTERVAL '500000 microseconds')"
        )
        flag = "false"
        value = "((i * 48271) % 1000)::float8 / 10.0"
    else:
        series = (
            "(WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < {n} - 1)"
            " SELECT i FROM g)"
        )
        unit_ts = (
            f"(datetime('{BASE}', '+' || {unit_s} || ' seconds') || printf('.%06d', i % 1000000))"
        )
        conv_ts = (
            f"(datetime('{BASE}', printf('%+d seconds', {conv_unit_s} + {offset_s})) || '.500000')"
        )
        flag = "0"
        value = "CAST((i * 48271) % 1000 AS REAL) / 10.0"
    variant = "CASE (i * 2654435761) % 3 WHEN 0 THEN 'control' WHEN 1 THEN 'b' ELSE 'c' END"
    # country: c0-c3 12.5 % of the units each, c4-c13 5 % each; platform by i % 3, missing when
    # i % 50 = 49
    r = "((i * 40503) % 1000)"
    country = f"'c' || (CASE WHEN {r} < 500 THEN {r} % 4 ELSE 4 + {r} % 10 END)"
    platform = "CASE i % 3 WHEN 0 THEN 'web' WHEN 1 THEN 'ios' ELSE 'android' END"
    obj = "json_build_object" if pg else "json_object"
    attributes = (
        f"CASE WHEN i % 50 = 49 THEN {obj}('country', {country})"
        f" ELSE {obj}('country', {country}, 'platform', {platform}) END"
    )
    name = (
        f"CASE i / {units} WHEN 0 THEN 'ev0' WHEN 1 THEN 'ev1' WHEN 2 THEN 'ev2'"
        " WHEN 3 THEN 'ev3' ELSE 'ev4' END"
    )
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO exposure_unit"
                " (experiment_id, phase, unit_id, variant, first_ts, multiple, attributes)"
                f" SELECT {exp_id}, 1, 'u' || i, {variant}, {unit_ts}, {flag}, {attributes}"
                f" FROM {series.format(n=units)}"
            )
        )
        conn.execute(
            text(
                "INSERT INTO conversion"
                " (event_id, name, unit_id, value, ts, received_at, payload_hash)"
                f" SELECT 'c' || i, {name}, 'u' || (i % {units}), {value}, {conv_ts}, {conv_ts},"
                f" 'x' FROM {series.format(n=n_conv)}"
            )
        )
    if pg:
        # VACUUM as autovacuum would after a bulk insert: it sets the visibility map, without which
        # every index-only read of the analysis goes back to the table (and the figure depends on
        # whether autovacuum happened to run before the timing).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE exposure_unit"))
            conn.execute(text("VACUUM ANALYZE conversion"))
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))


def _best(fn: Any, repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run(url: str, sizes: list[int], repeat: int) -> None:
    from sqlalchemy import text
    from sqlmodel import select

    from service.analysis.service import compute_results
    from service.db import open_session
    from service.experiments.models import Experiment

    engine, client = _setup(url)
    print(f"database: {engine.dialect.name}")
    print(
        f"{'units':>10} {'conversions':>12} {'load s':>8} {'GROUP BY s':>11}"
        f" {'results s':>10} {'ratio':>6} {'load avg':>8}"
    )
    with client:
        for units in sizes:
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM conversion"))
                conn.execute(text("DELETE FROM exposure_unit"))
            key = f"bench-{units}"
            _protocol(client, key)
            session = open_session()
            exp_id = session.exec(select(Experiment.id).where(Experiment.key == key)).one()
            session.close()
            assert exp_id is not None
            t0 = time.perf_counter()
            _load(engine, exp_id, units)
            load = time.perf_counter() - t0

            def floor() -> Any:
                with engine.connect() as conn:
                    return conn.execute(
                        text("SELECT name, COUNT(*), SUM(value) FROM conversion GROUP BY name")
                    ).all()

            def results(key: str = key) -> Any:
                session = open_session()
                try:
                    return compute_results(session, key)
                finally:
                    session.close()

            t_floor, _ = _best(floor, repeat)
            t_res, res = _best(results, repeat)
            print(
                f"{units:>10,} {units * CONVERSIONS_PER_UNIT:>12,} {load:>8.1f} {t_floor:>11.2f}"
                f" {t_res:>10.2f} {t_res / t_floor:>6.1f} {os.getloadavg()[0]:>8.2f}"
            )
            assert res.units == units, (res.units, units)
            assert all(m.variants[0].units > 0 for m in res.metrics)
            f = _snapshots(client, exp_id, key, repeat)
            print(
                f"{'':>10} snapshots: recompute {t_res:.2f} s | GET p50 {f['p50'] * 1000:.1f} ms"
                f" ({f['bytes'] / 1024:.0f} KiB, {t_res / f['p50']:,.0f}x faster; without the"
                f" stored response {f['p50_model'] * 1000:.1f} ms; GET /healthz"
                f" {f['p50_floor'] * 1000:.1f} ms) |"
                f" refresh: plain {f['plain']:.2f} s, + 2 dimensions {f['slices']:.2f} s"
                f" ({f['slices'] / f['plain']:.2f}x), + 14-day series & 2 dimensions: first"
                f" (backfill of 13 days) {f['first']:.2f} s, then {f['steady']:.2f} s"
                f" ({f['steady'] / f['plain']:.2f}x the plain refresh) |"
                f" load avg {os.getloadavg()[0]:.2f}",
                flush=True,
            )


def _snapshots(client: Any, exp_id: int, key: str, repeat: int) -> dict[str, float]:
    """Seconds: GET p50 (and its body size, bytes), the plain refresh, + slices, the first
    refresh with the series and slices (the backfill), then its steady state."""
    from sqlalchemy import delete
    from sqlmodel import select

    from service.db import open_session
    from service.experiments.models import Experiment, ExperimentPhase
    from service.snapshots import service as snapshots
    from service.snapshots.models import ResultsDay, ResultsSnapshot

    session = open_session(write=True)
    try:
        exp = session.get(Experiment, exp_id)
        assert exp is not None
        exp.started_at = _START
        for phase in session.exec(
            select(ExperimentPhase).where(ExperimentPhase.experiment_id == exp_id)
        ).all():
            phase.started_at = _START
            session.add(phase)
        session.add(exp)
        session.commit()
    finally:
        session.close()

    def refresh(series: bool, slices: bool) -> None:
        accepted, token = snapshots.request_refresh(key, "manual")
        assert token is not None
        snapshots.run_refresh(accepted.snapshot_id, token, series=series, slices=slices)

    out: dict[str, float] = {}
    out["plain"], _ = _best(lambda: refresh(False, False), repeat)
    out["slices"], _ = _best(lambda: refresh(False, True), repeat)
    t0 = time.perf_counter()
    refresh(True, True)
    out["first"] = time.perf_counter() - t0
    session = open_session()
    try:
        days = session.exec(select(ResultsDay).where(ResultsDay.experiment_id == exp_id)).all()
        assert len(days) == 13, len(days)
    finally:
        session.close()
    out["steady"], _ = _best(lambda: refresh(True, True), repeat)
    # GET …/results of the latest snapshot (its slices included): its stored response; then the
    # same snapshot without it (the model decoded, validated and serialized on every read, as
    # before migration 0008); and GET /healthz, the floor of the in-process HTTP client
    h = {"Authorization": f"Bearer {ADMIN}"}

    def p50(path: str, n: int = 50, after: Any = None) -> tuple[float, Any]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = client.get(path, headers=h)
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
            if after is not None:
                after()
        return statistics.median(times), r

    out["p50"], r = p50(f"/v1/experiments/{key}/results")
    assert len(r.json()["slices"]["dimensions"]) == len(DIMENSIONS), r.text[:500]
    out["bytes"] = len(r.content)
    session = open_session(write=True)
    try:
        row = session.get(ResultsSnapshot, r.json()["snapshot_id"])
        assert row is not None
        stored, row.response = row.response, None
        session.add(row)
        session.commit()
        snapshots.forget_read_caches()  # and after each read: no memo, no model kept
        out["p50_model"], again = p50(
            f"/v1/experiments/{key}/results", after=snapshots.forget_read_caches
        )
        assert again.content == r.content
        row.response = stored
        session.add(row)
        session.commit()
    finally:
        session.close()
    out["p50_floor"], _ = p50("/healthz")
    session = open_session(write=True)
    try:
        session.exec(delete(ResultsDay))  # type: ignore[call-overload]
        session.commit()
    finally:
        session.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", metavar="URL", help="a scratch PostgreSQL database")
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated unit counts")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per figure (best kept)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.postgres:
        url = args.postgres
    else:
        path = Path(tempfile.gettempdir()) / f"trialbook-bench-results-{os.getpid()}.db"
        url = f"sqlite:///{path}"
    try:
        run(url, sizes, args.repeat)
    finally:
        if not args.postgres:
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
