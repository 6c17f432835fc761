"""A quantile metric's slices are the quantiles of the slice's own units (product.md §12).

Each slice of a dimension (a kept value, ``other``, ``unknown``: the unit's attribute at its
first exposure) is compared from the order statistics of that slice's units only, never from
the whole experiment's. The reference is numpy's quantile of the per-unit values computed here
from the raw rows (``stats.QuantileSummary.from_array`` and ``stats.compare_quantiles``), on the
built-in store (SQLite or PostgreSQL, whichever the suite runs on) and on a DuckDB data source.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wh_dataset as dataset
from numpy.testing import assert_allclose

import stats

Q = 0.9
METRICS = [
    {"key": "conversion", "name": "Conversion", "type": "binomial", "event": "purchase"},
    {"key": "p90", "name": "Revenue p90", "type": "quantile", "event": "purchase", "quantile": Q},
    {
        "key": "visits_median",
        "name": "Visits median",
        "type": "quantile",
        "event": "visit",
        "aggregation": "count",
        "quantile": 0.5,
    },
]


def _protocol(key: str, source: str | None, kept: list[str] | None = None) -> dict[str, Any]:
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
        "secondary_metrics": ["p90", "visits_median"],
        "baseline": {"rate": 0.3},
        "attribution_window_hours": dataset.WINDOW_HOURS,
        "overrides": dataset.OVERRIDES,
        "dimensions": ["country", "plan"],
        "analysis": {"cuped": False},
    }
    if source is not None:
        body["data_source"] = source
    return body


def _per_unit(data: list[dataset.Row]) -> dict[str, dict[str, Any]]:
    """Per analysed unit, from the raw rows: variant, first exposure's attributes, and the
    window's Σ purchase value (a missing value is 1) and count of visits."""
    first: dict[str, dataset.Row] = {}
    arms: dict[str, set[str | None]] = {}
    for r in data:
        if r.kind != "exposure" or r.unit is None:
            continue
        arms.setdefault(r.unit, set()).add(r.variant)
        if r.unit not in first or r.ts < first[r.unit].ts:
            first[r.unit] = r
    units = {
        u: {
            "variant": x.variant,
            "country": x.country or "unknown",
            "plan": x.plan or "unknown",
            "purchase": 0.0,
            "visit": 0.0,
        }
        for u, x in first.items()
        if len(arms[u]) == 1 and u not in dataset.OVERRIDES
    }
    # the dimension's 10 most frequent values are kept, the rest are `other` (as the slices rank
    # them: most units first, then by value)
    for dim in ("country", "plan"):
        n: dict[str, int] = {}
        for u in units.values():
            if u[dim] != "unknown":
                n[u[dim]] = n.get(u[dim], 0) + 1
        kept = sorted(n, key=lambda v: (-n[v], v))[:10]
        for u in units.values():
            if u[dim] not in (*kept, "unknown"):
                u[dim] = "other"
    window = timedelta(hours=dataset.WINDOW_HOURS)
    counted: set[str | None] = set()
    for r in data:
        if r.kind != "conversion" or r.unit not in units or r.event_id in counted:
            continue
        counted.add(r.event_id)  # a duplicated row of one event id counts once
        if first[r.unit].ts <= r.ts < first[r.unit].ts + window:
            assert r.name is not None
            units[r.unit][r.name] += 1.0 if r.name == "visit" or r.value is None else r.value
    return units


def _estimate(x: float | None, want: float) -> None:
    if math.isnan(want):
        assert x is None or math.isnan(x)
    else:
        assert x is not None
        assert_allclose(x, want, rtol=1e-12, atol=1e-12)


def _assert_slices_are_the_slices_quantiles(
    got: dict[str, Any], units: dict[str, dict[str, Any]]
) -> int:
    """Every slice of both quantile metrics equals numpy on that slice's units; returns how many
    slice comparisons were checked."""
    checked = 0
    assert got["slices"] is not None
    for dim in got["slices"]["dimensions"]:
        name = dim["dimension"]
        for metric, event, q in (("p90", "purchase", Q), ("visits_median", "visit", 0.5)):
            m = next(x for x in dim["metrics"] if x["metric"] == metric)
            assert {s["value"] for s in m["slices"]} == set(dim["values"])
            for s in m["slices"]:
                mine = [u for u in units.values() if u[name] == s["value"]]
                assert s["units"] == len(mine)
                arm = {
                    v: stats.QuantileSummary.from_array(
                        [u[event] for u in mine if u["variant"] == v], q
                    )
                    for v in dataset.VARIANTS
                }
                (comp,) = s["comparisons"]
                assert comp["units"] == arm["treatment"].n
                assert comp["control_units"] == arm["control"].n
                absolute, relative = stats.compare_quantiles(arm["control"], arm["treatment"])
                for key in ("estimate", "ci_low", "ci_high", "p_value", "std_error"):
                    _estimate(comp["absolute"][key], getattr(absolute, key))
                    _estimate(comp["relative"][key], getattr(relative, key))
                checked += 1
    return checked


@pytest.mark.slow
def test_a_quantile_metrics_slices_are_the_quantiles_of_each_slices_own_units(
    client: Any, keys: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    admin, sdk = keys["admin"], keys["sdk"]
    data = dataset.rows(n_units=400, seed=23)
    # one unit in four from one of 11 rarer countries: 5 of them are kept, 6 go to `other`
    data = [
        replace(r, country=f"r{int(r.unit[2:]) % 11:02d}")
        if r.kind == "exposure" and r.unit and r.unit[2:].isdigit() and int(r.unit[2:]) % 4 == 0
        else r
        for r in data
    ]
    units = _per_unit(data)
    for m in METRICS:
        assert client.post("/v1/metrics", json=m, headers=admin).status_code == 201
    # the built-in store: the events through /v1/events
    dataset.start_in_store(client, _protocol("sq-builtin", None), data, admin, sdk)
    # a DuckDB data source of the same rows
    dataset.load_duckdb(tmp_path / "wh.duckdb", data, "sq-duckdb")
    source = {
        "key": "sq-duckdb",
        "engine": "duckdb",
        "connection": {"path": str(tmp_path / "wh.duckdb")},
        "exposures": {"columns": dataset.EXPOSURE_COLUMNS, "table": "exposures"},
        "events": {"columns": dataset.EVENT_COLUMNS, "table": "events"},
    }
    r = client.post("/v1/data-sources", json=source, headers=admin)
    assert r.status_code == 201, r.text
    r = client.post("/v1/experiments", json=_protocol("sq-duckdb", "sq-duckdb"), headers=admin)
    assert r.status_code == 201, r.text
    assert client.post("/v1/experiments/sq-duckdb/start", headers=admin).status_code == 200

    for key in ("sq-builtin", "sq-duckdb"):
        r = client.get(f"/v1/experiments/{key}/results", headers=keys["viewer"])
        assert r.status_code == 200, r.text
        got = r.json()
        # the whole experiment's quantiles: numpy over every analysed unit (as before)
        p90 = next(m for m in got["metrics"] if m["metric"] == "p90")
        for arm in p90["variants"]:
            values = [u["purchase"] for u in units.values() if u["variant"] == arm["variant"]]
            assert arm["units"] == len(values)
            assert_allclose(arm["mean"], np.quantile(values, Q), rtol=1e-12)
        country = next(d for d in got["slices"]["dimensions"] if d["dimension"] == "country")
        assert {"other", "unknown"} <= set(country["values"]) and len(country["values"]) == 12
        # 10 kept countries, other, unknown; 2 plans: 14 slices of each quantile metric
        assert _assert_slices_are_the_slices_quantiles(got, units) == 28, key
