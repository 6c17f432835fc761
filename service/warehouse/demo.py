"""``trialbook demo --warehouse duckdb``: the warehouse path in a minute.

The demo's simulated users are written to a DuckDB file (tables ``exposures`` and ``events``,
as an organisation's warehouse would keep them) instead of being sent to ``/v1/events``; the
demo then registers that file as a data source, names it in the experiment, and reads the
results the server computed in DuckDB (the file is read where the server runs: run the demo on
the server machine, or give ``--warehouse-path`` a path the server sees).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DEMO_SOURCE", "source_body", "write_duckdb"]

DEMO_SOURCE = "demo-duckdb"


def write_duckdb(path: Path, events: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """Write the demo's events (as /v1/events takes them) to a DuckDB file; (exposures, events)."""
    from service.warehouse.engines import _driver

    duckdb = _driver("duckdb")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", ".wal"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    xs = [
        (e["unit_id"], e["experiment"], e["variant"], e["timestamp"], e["event_id"])
        for e in events
        if e["type"] == "exposure"
    ]
    cs = [
        (e["unit_id"], e["name"], e.get("value"), e["timestamp"], e["event_id"])
        for e in events
        if e["type"] == "conversion"
    ]
    con = duckdb.connect(str(path))
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(
            "CREATE TABLE exposures (unit_id VARCHAR, experiment VARCHAR, variant VARCHAR,"
            " ts TIMESTAMPTZ, event_id VARCHAR)"
        )
        con.execute(
            "CREATE TABLE events (unit_id VARCHAR, name VARCHAR, value DOUBLE, ts TIMESTAMPTZ,"
            " event_id VARCHAR)"
        )
        if xs:
            con.executemany("INSERT INTO exposures VALUES (?, ?, ?, ?, ?)", xs)
        if cs:
            con.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", cs)
    finally:
        con.close()
    return len(xs), len(cs)


def source_body(path: Path) -> dict[str, Any]:
    """The data source of the demo's DuckDB file (its columns are named as ours)."""
    return {
        "key": DEMO_SOURCE,
        "engine": "duckdb",
        "description": "written by `trialbook demo --warehouse duckdb`",
        "connection": {"path": os.fspath(Path(path).resolve())},
        "exposures": {
            "table": "exposures",
            "columns": {
                "unit_id": "unit_id",
                "experiment": "experiment",
                "variant": "variant",
                "timestamp": "ts",
                "event_id": "event_id",
            },
        },
        "events": {
            "table": "events",
            "columns": {
                "unit_id": "unit_id",
                "name": "name",
                "value": "value",
                "timestamp": "ts",
                "event_id": "event_id",
            },
        },
    }
