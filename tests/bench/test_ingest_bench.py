"""bench/ingest.py's raw baseline stores the rows the service would store (it once fell behind
the service: ``unit_rows`` took the kept attributes, ``exposure_unit`` gained a column)."""

from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench" / "ingest.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_ingest", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_raw_baseline_of_the_ingest_bench_stores_every_row_and_first_exposure(tmp_path):
    bench = load_bench()
    path = tmp_path / "bench.db"
    url = f"sqlite:///{path}"
    bench.reset_database(url)
    exp_id = bench.seed_experiment(url)
    batches = bench.make_batches(2, "v4")
    rows = bench.raw_rows(batches, exp_id, True)
    rate = bench.raw_sqlite(str(path), rows, units=True)
    assert rate > 0
    exposures = sum(len(r[0]) for r in rows)
    conversions = sum(len(r[1]) for r in rows)
    assert exposures + conversions == sum(len(b) for b in batches)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM exposure").fetchone() == (exposures,)
        assert conn.execute("SELECT COUNT(*) FROM conversion").fetchone() == (conversions,)
        units = {u for r in rows for u in r[2]}
        assert conn.execute("SELECT COUNT(*) FROM exposure_unit").fetchone() == (
            len({(u[0], u[1], u[2]) for u in units}),
        )
    finally:
        conn.close()
