"""Quantile metrics (``type: quantile``) through HTTP: the catalogue, the order statistics the
database returns, and the results against numpy on the same per-unit values."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
from numpy.testing import assert_allclose

import stats

KEY = "latency-quantiles"


def test_quantile_metric_results_match_numpy_on_the_per_unit_values(
    client: Any,
    admin: dict[str, str],
    make_metric: Any,
    bodies: Any,
    ingest: Any,
    results: Any,
    raw: Any,
    base: Any,
    reference: Any,
) -> None:
    make_metric("conversion")
    created = make_metric("p90_latency", "quantile", event="latency", quantile=0.9)
    assert created["type"] == "quantile" and created["quantile"] == 0.9
    listed = client.get("/v1/metrics", headers=admin).json()["items"]
    assert {m["key"]: m["quantile"] for m in listed}["p90_latency"] == 0.9
    make_metric("median_views", "quantile", event="view", aggregation="count", quantile=0.5)
    body = bodies.experiment(
        KEY, secondary_metrics=["p90_latency", "median_views"], analysis={"cuped": False}
    )
    assert client.post("/v1/experiments", json=body, headers=admin).status_code == 201
    assert client.post(f"/v1/experiments/{KEY}/start", headers=admin).status_code == 200
    rng = np.random.default_rng(90)
    for i in range(700):
        variant = "control" if rng.random() < 0.5 else "treatment"
        unit, ts = f"u-{i:04d}", base + timedelta(minutes=i)
        raw.expose(unit, variant, ts, KEY)
        if rng.random() < 0.15:
            continue  # no events: 0 for both metrics (zeros)
        for _ in range(int(rng.integers(1, 4))):
            # heavy tail, rounded to 10 ms so that many units tie
            value = round(
                float(rng.pareto(1.5) + 1) * (130.0 if variant == "treatment" else 100.0), -1
            )
            raw.convert(unit, "latency", ts + timedelta(seconds=30), value)
        for _ in range(int(rng.poisson(2.0))):
            raw.convert(unit, "view", ts + timedelta(seconds=5))
    ingest(raw.exposures + raw.conversions)
    got = results(KEY)

    ref = reference(raw, experiment=KEY, overrides=set(), window_hours=None, pre_days=None)
    variant = ref["variant"]
    for metric, event, how, q in (
        ("p90_latency", "latency", "sum", 0.9),
        ("median_views", "view", "count", 0.5),
    ):
        per_unit = ref["post"](event, how)
        m = next(x for x in got["metrics"] if x["metric"] == metric)
        assert m["type"] == "quantile"
        arms = {
            v: stats.QuantileSummary.from_array(per_unit[variant == v], q)
            for v in ("control", "treatment")
        }
        for arm in m["variants"]:
            values = per_unit[variant == arm["variant"]]
            assert arm["units"] == values.size
            assert_allclose(arm["mean"], np.quantile(values, q), rtol=1e-12)
        want_abs, want_rel = stats.compare_quantiles(arms["control"], arms["treatment"])
        comp = m["comparisons"][0]
        for key in ("estimate", "ci_low", "ci_high", "p_value", "std_error"):
            assert_allclose(comp["absolute"][key], getattr(want_abs, key), rtol=1e-9)
            assert_allclose(comp["relative"][key], getattr(want_rel, key), rtol=1e-9)
    p90 = next(x for x in got["metrics"] if x["metric"] == "p90_latency")
    assert p90["comparisons"][0]["absolute"]["estimate"] > 0

    md = client.get(f"/v1/experiments/{KEY}/report?format=md", headers=admin)
    assert md.status_code == 200
    assert "### P90 Latency (p90\\_latency) — secondary, quantile" in md.text
    html = client.get(f"/v1/experiments/{KEY}/report", headers=admin)
    # product.md §14 layout: a quantile metric carries its note (what the interval is) in HTML
    assert html.status_code == 200 and "Quantile metric: each arm" in html.text


def test_a_quantile_metric_needs_its_level(client: Any, admin: dict[str, str], bodies: Any) -> None:
    r = client.post(
        "/v1/metrics", json=bodies.metric("p99", "quantile", event="latency"), headers=admin
    )
    assert r.status_code == 422 and "quantile" in r.text
    r = client.post(
        "/v1/metrics",
        json=bodies.metric("p99", "quantile", event="latency", quantile=1.5),
        headers=admin,
    )
    assert r.status_code == 422 and "quantile" in r.text
    r = client.post(
        "/v1/metrics",
        json=bodies.metric("rate", "binomial", event="x", quantile=0.5),
        headers=admin,
    )
    assert r.status_code == 422 and "quantile" in r.text
