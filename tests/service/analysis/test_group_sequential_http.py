"""``analysis.method: group_sequential`` through HTTP: looks recorded as they happen, bounds of the
engine, early stop for efficacy, the adjusted α of every look in the results."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
from numpy.testing import assert_allclose

import stats

KEY = "gs-checkout"


def _start(client: Any, admin: dict[str, str], make_experiment: Any, **analysis: Any) -> int:
    body = make_experiment(
        KEY,
        start=True,
        primary_metric={"metric": "conversion", "mde": 0.3},
        baseline={"rate": 0.2},
        analysis={"method": "group_sequential", "cuped": False} | analysis,
    )
    planned = body["sample_size_per_variant"]
    assert isinstance(planned, int) and planned > 100
    return planned


def _batch(raw: Any, base: Any, start: int, count: int, rates: dict[str, float], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(start, start + count):
        variant = "control" if i % 2 == 0 else "treatment"
        unit = f"u-{i:05d}"
        ts = base + timedelta(seconds=i)
        raw.expose(unit, variant, ts, KEY)
        if rng.random() < rates[variant]:
            raw.convert(unit, "conversion", ts + timedelta(minutes=1))


def _send(ingest: Any, raw: Any) -> None:
    ingest(raw.exposures + raw.conversions)
    raw.exposures.clear()
    raw.conversions.clear()


def test_group_sequential_records_looks_and_reports_the_adjusted_alpha_of_each(
    client: Any,
    admin: dict[str, str],
    make_experiment: Any,
    ingest: Any,
    results: Any,
    raw: Any,
    base: Any,
) -> None:
    planned = _start(client, admin, make_experiment)
    rates = {"control": 0.2, "treatment": 0.2}
    sizes = [planned // 5, planned // 5 + 2, planned // 5 + 2 * (planned // 5)]
    done = 0
    seen: list[dict[str, Any]] = []
    for k, size in enumerate(sizes):
        _batch(raw, base, 2 * done, 2 * (size - done), rates, seed=k)
        _send(ingest, raw)
        done = size
        # results are snapshots (product.md §12): new events count once refreshed
        r = client.post(f"/v1/experiments/{KEY}/results/refresh", headers=admin)
        assert r.status_code == 202, r.text
        seen.append(results(KEY))
    again = results(KEY)  # no new data: no new look
    assert [len(r["group_sequential"]["looks"]) for r in seen] == [1, 2, 2]
    assert len(again["group_sequential"]["looks"]) == 2
    first, _, third = seen
    assert first["method"] == "group_sequential"
    # the second analysis advanced by less than 1 % of the horizon: provisional, not recorded
    assert_allclose(
        [lk["information_fraction"] for lk in third["group_sequential"]["looks"]],
        [sizes[0] / planned, sizes[2] / planned],
        rtol=1e-12,
    )
    expected = stats.efficacy_bounds([sizes[0] / planned, sizes[2] / planned])
    got = third["group_sequential"]["looks"]
    assert_allclose([lk["bound"] for lk in got], [b.bound for b in expected], rtol=1e-12)
    assert_allclose(
        [lk["nominal_alpha"] for lk in got], [b.nominal_alpha for b in expected], rtol=1e-12
    )
    comp = third["metrics"][0]["comparisons"][0]
    assert comp["inference"] == "group_sequential"
    assert comp["group_sequential"]["look"] == 2
    assert_allclose(comp["group_sequential"]["bound"], expected[1].bound, rtol=1e-12)
    # the repeated confidence interval is estimate ± bound · se
    gs_abs = comp["group_sequential"]["absolute"]
    assert_allclose(
        gs_abs["ci_high"] - gs_abs["ci_low"],
        2 * expected[1].bound * comp["absolute"]["std_error"],
        rtol=1e-9,
    )
    assert third["decision"]["recommendation"] == "keep_running"


def test_group_sequential_stops_early_for_efficacy(
    client: Any,
    admin: dict[str, str],
    make_experiment: Any,
    ingest: Any,
    results: Any,
    raw: Any,
    base: Any,
) -> None:
    planned = _start(client, admin, make_experiment, spending="power", rho=2.0)
    n = planned // 2
    _batch(raw, base, 0, 2 * n, {"control": 0.15, "treatment": 0.35}, seed=7)
    _send(ingest, raw)
    body = results(KEY)
    design = body["group_sequential"]
    assert design["spending"] == "power" and design["rho"] == 2.0
    look = design["looks"][-1]
    assert_allclose(look["alpha_spent"], 0.05 * (n / planned) ** 2, rtol=1e-12)
    comp = body["metrics"][0]["comparisons"][0]
    assert comp["group_sequential"]["crossed"] and comp["significant"]
    assert body["power"]["progress"] < 1
    decision = body["decision"]
    assert decision["recommendation"] == "ship" and decision["variant"] == "treatment"
    assert any("efficacy bound of look 1" in r for r in decision["reasons"])
    viewer = {"Authorization": admin["Authorization"]}
    md = client.get(f"/v1/experiments/{KEY}/report?format=md", headers=viewer)
    assert md.status_code == 200, md.text
    # The report's layout of product.md §14: the look is a row of the treatment's comparison.
    assert "| treatment | Group sequential, look 1 |" in md.text
    assert "bound crossed" in md.text
    assert f"adjusted α {look['nominal_alpha']:.4g}" in md.text
    html = client.get(f"/v1/experiments/{KEY}/report", headers=viewer)
    assert html.status_code == 200 and "Group sequential, look" in html.text


def test_power_spending_without_rho_is_refused_naming_the_field(
    client: Any, admin: dict[str, str], make_metric: Any, bodies: Any
) -> None:
    make_metric("conversion")
    body = bodies.experiment(KEY, analysis={"method": "group_sequential", "spending": "power"})
    r = client.post("/v1/experiments", json=body, headers=admin)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "rho" in r.text


def test_the_time_series_of_a_group_sequential_experiment_is_served(
    client: Any,
    admin: dict[str, str],
    make_experiment: Any,
    ingest: Any,
    raw: Any,
    base: Any,
) -> None:
    # Regression: the series' `method` allowed only fixed and sequential, so GET …/timeseries
    # (and the report, which draws it) answered 500 for a group-sequential experiment.
    planned = _start(client, admin, make_experiment, spending="power", rho=2.0)
    _batch(raw, base, 0, planned // 2, {"control": 0.15, "treatment": 0.35}, seed=3)
    _send(ingest, raw)
    r = client.get(f"/v1/experiments/{KEY}/results/timeseries", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["method"] == "group_sequential"


def test_a_template_may_default_the_method_to_group_sequential(
    client: Any, admin: dict[str, str]
) -> None:
    # The templates' analysis defaults allowed only fixed and sequential (422 for the third).
    body = {
        "key": "gs-default",
        "name": "GS default",
        "defaults": {"analysis": {"method": "group_sequential"}},
    }
    r = client.post("/v1/templates", json=body, headers=admin)
    assert r.status_code == 201, r.text
    assert r.json()["defaults"]["analysis"]["method"] == "group_sequential"
