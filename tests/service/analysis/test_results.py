"""GET /v1/experiments/{key}/results end to end: events in through /v1/events, results compared
with ``stats.analyze`` applied to summaries computed independently with numpy from the raw rows."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from numpy.testing import assert_allclose
from statsmodels.stats.multitest import multipletests

import stats

KEY = "checkout-results"
VARIANTS = [
    {"key": "control", "weight": 0.4, "is_control": True},
    {"key": "b", "weight": 0.3},
    {"key": "c", "weight": 0.3},
]
ORDER = ["control", "b", "c"]
# same instant as the `base` fixture: the reference only uses differences of times
BASE = datetime(2026, 1, 10, 0, 0, 0, 123_456, tzinfo=UTC)
Raw = Any
OVERRIDES = {f"ov-{i}": "b" for i in range(5)}
WINDOW_H = 48.0
PRE_DAYS = 7
US = timedelta(microseconds=1)


def _metrics(make_metric: Any) -> None:
    make_metric("conversion", "binomial", event="signup")
    make_metric("revenue", "mean", event="purchase", winsorize_lower=0.05, winsorize_upper=0.9)
    make_metric("pageviews", "mean", event="pageview", aggregation="count")
    make_metric("aov", "ratio")
    make_metric("latency", "mean", event="latency", higher_is_better=False)


def _experiment(client: Any, admin: dict[str, str], bodies: Any, **extra: Any) -> None:
    body = bodies.experiment(
        KEY,
        variants=VARIANTS,
        secondary_metrics=["revenue", "pageviews", "aov"],
        guardrails=[{"metric": "latency", "margin": 0.1}],
        attribution_window_hours=WINDOW_H,
        overrides=OVERRIDES,
        analysis={"cuped": True, "pre_period_days": PRE_DAYS, "bayesian": True},
    )
    r = client.post("/v1/experiments", json=body | extra, headers=admin)
    assert r.status_code == 201, r.text
    r = client.post(f"/v1/experiments/{KEY}/start", headers=admin)
    assert r.status_code == 200, r.text


def _simulate(raw: Raw, n: int = 300, seed: int = 20260110) -> None:
    rng = np.random.default_rng(seed)
    day_us = 86_400 * 1_000_000
    for i in range(n):
        unit = f"u-{i:04d}"
        v = ORDER[int(rng.choice(3, p=[0.4, 0.3, 0.3]))]
        first = BASE + timedelta(microseconds=int(rng.integers(0, 3 * day_us)))
        raw.expose(unit, v, first, KEY)
        if rng.random() < 0.2:  # a repeated exposure to the same variant changes nothing
            raw.expose(unit, v, first + timedelta(hours=float(rng.uniform(0, 30))), KEY)
        for name, lam in (
            ("signup", 0.5),
            ("purchase", 1.2),
            ("pageview", 3.0),
            ("aov_num", 1.0),
            ("aov_den", 1.0),
            ("latency", 1.5),
        ):
            for _ in range(int(rng.poisson(lam))):
                # from 9 days before the first exposure (before the 7-day pre-period) to 3 days
                # after it (past the 48 h attribution window)
                ts = first + timedelta(microseconds=int(rng.integers(-9 * day_us, 3 * day_us)))
                value: float | None = None
                if name == "purchase":
                    value = float(rng.lognormal(3.0, 1.0)) * (1.3 if v == "c" else 1.0)
                elif name == "latency":
                    value = float(rng.normal(200.0, 30.0)) * (1.15 if v == "b" else 1.0)
                elif name == "aov_num":
                    value = float(rng.gamma(2.0, 10.0))
                elif name == "aov_den":
                    value = float(rng.integers(1, 4))
                raw.convert(unit, name, ts, value)
    # units exposed to two variants, and units with a forced override: both excluded
    for i in range(10):
        t = BASE + timedelta(hours=i)
        raw.expose(f"m-{i}", "control", t, KEY)
        raw.expose(f"m-{i}", "b", t + timedelta(minutes=5), KEY)
        raw.convert(f"m-{i}", "signup", t + timedelta(minutes=10))
    for unit in OVERRIDES:
        raw.expose(unit, "b", BASE, KEY)
        raw.convert(unit, "purchase", BASE + timedelta(hours=1), 1000.0)
    # window edges, all in the control arm
    t = BASE + timedelta(days=1)
    raw.expose("edge-at", "control", t, KEY)
    raw.convert("edge-at", "signup", t)  # exactly at the first exposure: counts
    raw.expose("edge-before", "control", t, KEY)
    raw.convert("edge-before", "signup", t - US)  # just before: pre-period only
    raw.expose("edge-end", "control", t, KEY)
    raw.convert("edge-end", "purchase", t + timedelta(hours=WINDOW_H), 50.0)  # window end: out
    raw.expose("edge-inside", "control", t, KEY)
    raw.convert("edge-inside", "purchase", t + timedelta(hours=WINDOW_H) - US, 50.0)  # in
    raw.expose("edge-pre", "control", t, KEY)
    raw.convert("edge-pre", "pageview", t - timedelta(days=PRE_DAYS))  # pre-period start: in
    raw.convert("edge-pre", "pageview", t - timedelta(days=PRE_DAYS) - US)  # before it: out


def _reference(raw: Raw, reference: Any, *, correction: str = "holm") -> dict[str, Any]:
    ref = reference(
        raw,
        experiment=KEY,
        overrides=set(OVERRIDES),
        window_hours=WINDOW_H,
        pre_days=PRE_DAYS,
    )
    variant = ref["variant"]

    def mean_summaries(x: np.ndarray, pre: np.ndarray) -> dict[str, stats.MeanSummary]:
        return {v: stats.MeanSummary.from_array(x[variant == v], pre[variant == v]) for v in ORDER}

    rev, rev_pre = ref["post"]("purchase", "sum"), ref["pre"]("purchase", "sum")
    # pooled cut points over all arms, numpy's default (linear) percentile
    lo, hi = np.percentile(rev, 5), np.percentile(rev, 90)
    num, den = ref["post"]("aov_num", "sum"), ref["post"]("aov_den", "sum")
    inputs = [
        stats.MetricInput(
            "conversion",
            "binomial",
            mean_summaries(ref["post"]("signup", "binomial"), ref["pre"]("signup", "binomial")),
            role="primary",
        ),
        stats.MetricInput(
            "revenue",
            "mean",
            mean_summaries(np.clip(rev, lo, hi), np.clip(rev_pre, lo, hi)),
            role="secondary",
        ),
        stats.MetricInput(
            "pageviews",
            "mean",
            mean_summaries(ref["post"]("pageview", "count"), ref["pre"]("pageview", "count")),
            role="secondary",
        ),
        stats.MetricInput(
            "aov",
            "ratio",
            {
                v: stats.RatioSummary.from_arrays(num[variant == v], den[variant == v])
                for v in ORDER
            },
            role="secondary",
        ),
        stats.MetricInput(
            "latency",
            "mean",
            mean_summaries(ref["post"]("latency", "sum"), ref["pre"]("latency", "sum")),
            role="guardrail",
            higher_is_better=False,
            guardrail_margin=0.1,
        ),
    ]
    result = stats.analyze(
        inputs,
        control="control",
        settings=stats.AnalysisSettings(
            correction=correction,  # type: ignore[arg-type]
            cuped=True,
            bayesian=True,
        ),
        srm=stats.SrmInput(
            units={v: int((variant == v).sum()) for v in ORDER},
            weights={str(v["key"]): float(str(v["weight"])) for v in VARIANTS},
        ),
    ).to_dict()
    return {"result": result, "ref": ref}


def _assert_close(got: Any, want: Any, path: str = "") -> None:
    if isinstance(want, dict):
        for k, w in want.items():
            if k in ("p_value_adjusted", "significant"):
                continue  # checked against statsmodels separately
            assert k in got, f"{path}.{k} missing"
            _assert_close(got[k], w, f"{path}.{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_close(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert got is not None, path
        assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=path)
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


def test_results_match_numpy_reference_end_to_end(
    client: Any,
    admin: dict[str, str],
    bodies: Any,
    make_metric: Any,
    ingest: Any,
    results: Any,
    raw: Raw,
    reference: Any,
) -> None:
    _metrics(make_metric)
    _experiment(client, admin, bodies)
    _simulate(raw)
    ingest(raw.exposures + raw.conversions)

    got = results(KEY)
    want = _reference(raw, reference)
    expected = want["result"]

    assert got["experiment"] == KEY and got["phase"] == 1 and got["status"] == "running"
    assert got["multiple_exposures"] == 10 == want["ref"]["multiple"]
    assert got["overridden_units"] == 5 == want["ref"]["overridden"]
    assert got["units"] == len(want["ref"]["units"])
    _assert_close(got["srm"], expected["srm"], "srm")
    assert [m["metric"] for m in got["metrics"]] == [
        "conversion",
        "revenue",
        "pageviews",
        "aov",
        "latency",
    ]
    for g, w in zip(got["metrics"], expected["metrics"], strict=True):
        _assert_close(g, w, g["metric"])
    assert got["metrics"][1]["winsorized"] is True

    # §6: the family is primary + secondary × treatments; the ABSOLUTE (Welch, unadjusted by
    # CUPED) p-values are adjusted. Reference: statsmodels' Holm on the reference p-values.
    family = [
        (i, j)
        for i, m in enumerate(expected["metrics"])
        if m["role"] != "guardrail"
        for j in range(2)
    ]
    raw_p = [expected["metrics"][i]["comparisons"][j]["absolute"]["p_value"] for i, j in family]
    _, holm, _, _ = multipletests(raw_p, alpha=0.05, method="holm")
    for (i, j), p_adj in zip(family, holm, strict=True):
        c = got["metrics"][i]["comparisons"][j]
        assert_allclose(c["p_value_adjusted"], p_adj, rtol=1e-9)
        assert c["significant"] == (p_adj < 0.05)
    assert all(c["cuped_applied"] for m in got["metrics"][:3] for c in m["comparisons"])
    guard = got["metrics"][4]["comparisons"]
    assert all(c["guardrail"]["margin"] == 0.1 for c in guard)
    assert got["power"]["units_per_variant"] == got["srm"]["observed"]
    assert got["power"]["units_so_far"] == min(got["srm"]["observed"].values())


@pytest.mark.parametrize("split_units", [1, 10**12])
def test_the_postgresql_range_split_gives_the_same_sums(
    client: Any,
    admin: dict[str, str],
    bodies: Any,
    make_metric: Any,
    ingest: Any,
    results: Any,
    raw: Raw,
    reference: Any,
    monkeypatch: pytest.MonkeyPatch,
    split_units: int,
) -> None:
    """From PG_PARTITION_MIN_UNITS units PostgreSQL sums unit ranges in parallel; forced on here
    (1) and off (10**12), the answer is the numpy reference either way (SQLite ignores it)."""
    from service.analysis import aggregate

    monkeypatch.setattr(aggregate, "PG_PARTITION_MIN_UNITS", split_units)
    _metrics(make_metric)
    _experiment(client, admin, bodies)
    _simulate(raw)
    ingest(raw.exposures + raw.conversions)
    got = results(KEY)
    expected = _reference(raw, reference)["result"]
    for g, w in zip(got["metrics"], expected["metrics"], strict=True):
        _assert_close(g, w, g["metric"])


def test_window_edges_are_exact(
    client: Any,
    admin: dict[str, str],
    bodies: Any,
    make_metric: Any,
    ingest: Any,
    raw: Raw,
) -> None:
    from service.analysis.aggregate import MetricSpec, Window, variant_sums
    from service.db import open_session

    _metrics(make_metric)
    _experiment(client, admin, bodies)
    t = BASE + timedelta(days=1, microseconds=999_999)  # a carry on every microsecond shift
    for unit in ("at", "before", "end", "inside", "pre", "old"):
        raw.expose(unit, "control", t, KEY)
    raw.expose("other", "b", t, KEY)
    raw.convert("at", "pageview", t)  # counts: at the first exposure
    raw.convert("before", "pageview", t - US)  # pre-period
    raw.convert("end", "pageview", t + timedelta(hours=WINDOW_H))  # out: window end exclusive
    raw.convert("inside", "pageview", t + timedelta(hours=WINDOW_H) - US)  # counts
    raw.convert("pre", "pageview", t - timedelta(days=PRE_DAYS))  # pre-period start: in
    raw.convert("old", "pageview", t - timedelta(days=PRE_DAYS) - US)  # before the pre-period
    ingest(raw.exposures + raw.conversions)

    exp = client.get(f"/v1/experiments/{KEY}", headers=admin).json()
    session = open_session()
    try:
        from sqlmodel import select

        from service.experiments.models import Experiment

        exp_id = session.exec(select(Experiment.id).where(Experiment.key == KEY)).one()
        assert exp_id is not None
        window = Window(
            experiment_id=exp_id,
            phase=exp["phase"],
            attribution_window_hours=WINDOW_H,
            pre_period_days=PRE_DAYS,
        )
        spec = MetricSpec("pageviews", "mean", event="pageview", aggregation="count")
        sums = variant_sums(session, [spec], window, 7)["pageviews"]
    finally:
        session.close()
    control = sums["control"]
    assert control.n == 6
    # by hand: x = at 1, inside 1; pre = before 1, pre 1; no unit has both
    assert control.sums == {
        "sum_x": 2.0,
        "sum_x2": 2.0,
        "sum_pre": 2.0,
        "sum_pre2": 2.0,
        "sum_x_pre": 0.0,
    }
    assert sums["b"].n == 1 and sums["b"].sums["sum_x"] == 0.0


def test_conversions_after_the_stop_do_not_count(
    client: Any,
    admin: dict[str, str],
    bodies: Any,
    make_metric: Any,
    ingest: Any,
    results: Any,
    raw: Raw,
    new_raw: Any,
) -> None:
    _metrics(make_metric)
    _experiment(client, admin, bodies, attribution_window_hours=None)
    now = datetime.now(UTC)
    for i in range(4):
        raw.expose(f"s-{i}", "control", now - timedelta(hours=1), KEY)
        raw.expose(f"t-{i}", "b", now - timedelta(hours=1), KEY)
        raw.expose(f"w-{i}", "c", now - timedelta(hours=1), KEY)
    for i in range(2):
        raw.convert(f"s-{i}", "signup", now - timedelta(minutes=30))  # before the stop
    ingest(raw.exposures + raw.conversions)
    r = client.post(f"/v1/experiments/{KEY}/stop", headers=admin)
    assert r.status_code == 200, r.text
    late = new_raw()
    for i in range(4):
        late.convert(f"t-{i}", "signup", datetime.now(UTC) + timedelta(hours=1))  # after it
    ingest(late.conversions)
    got = results(KEY)
    conv = got["metrics"][0]["variants"]
    assert [(v["variant"], v["units"], v["mean"]) for v in conv] == [
        ("control", 4, 0.5),
        ("b", 4, 0.0),
        ("c", 4, 0.0),
    ]
    assert got["status"] == "stopped"
    assert got["decision"]["recommendation"] in ("inconclusive", "invalid", "roll_back")


def test_winsorization_caps_at_pooled_numpy_percentiles(
    client: Any,
    admin: dict[str, str],
    bodies: Any,
    make_metric: Any,
    ingest: Any,
    results: Any,
    raw: Raw,
) -> None:
    _metrics(make_metric)
    _experiment(client, admin, bodies, analysis={"cuped": False})
    values = {"control": [1.0, 2.0, 3.0, 4.0, 100.0], "b": [5.0, 6.0, 7.0, 8.0, 9.0], "c": [0.0]}
    for v, xs in values.items():
        for i, x in enumerate(xs):
            unit = f"{v}-{i}"
            raw.expose(unit, v, BASE, KEY)
            if x:
                raw.convert(unit, "purchase", BASE + timedelta(hours=1), x)
    ingest(raw.exposures + raw.conversions)
    got = results(KEY)
    pooled = np.array([x for xs in values.values() for x in xs])
    lo, hi = np.percentile(pooled, 5), np.percentile(pooled, 90)  # numpy linear (type 7)
    revenue = {v["variant"]: v for v in got["metrics"][1]["variants"]}
    for v, xs in values.items():
        capped = np.clip(np.array(xs), lo, hi)
        assert_allclose(revenue[v]["mean"], capped.mean(), rtol=1e-12)
        if len(xs) > 1:
            assert_allclose(revenue[v]["sd"], capped.std(ddof=1), rtol=1e-9)
    assert got["metrics"][1]["comparisons"][0]["cuped"] is None


def test_srm_makes_the_result_invalid_end_to_end(
    client: Any,
    admin: dict[str, str],
    bodies: Any,
    make_metric: Any,
    ingest: Any,
    results: Any,
    raw: Raw,
) -> None:
    _metrics(make_metric)
    _experiment(client, admin, bodies)
    for v, n in (("control", 400), ("b", 300), ("c", 150)):
        for i in range(n):
            raw.expose(f"{v}-{i}", v, BASE, KEY)
    ingest(raw.exposures)
    got = results(KEY)
    assert got["srm"]["observed"] == {"control": 400, "b": 300, "c": 150}
    assert got["srm"]["mismatch"] is True
    assert got["decision"]["recommendation"] == "invalid"
    assert "Sample ratio mismatch" in got["decision"]["reasons"][0]


def test_no_exposures_and_empty_arms_are_warnings_not_errors(
    client: Any,
    admin: dict[str, str],
    bodies: Any,
    make_metric: Any,
    ingest: Any,
    results: Any,
    raw: Raw,
) -> None:
    _metrics(make_metric)
    _experiment(client, admin, bodies)
    got = results(KEY)
    assert "no_exposures" in got["warnings"]
    assert got["units"] == 0
    assert got["decision"]["recommendation"] == "keep_running"
    assert all(v["mean"] is None for m in got["metrics"] for v in m["variants"])

    raw.expose("only", "control", BASE, KEY)
    raw.expose("only-2", "control", BASE, KEY)
    raw.convert("only", "signup", BASE)
    ingest(raw.exposures + raw.conversions)
    # Results are snapshots: new events show after a refresh (product.md §12).
    r = client.post(f"/v1/experiments/{KEY}/results/refresh", headers=admin)
    assert r.status_code == 202, r.text
    got = results(KEY)
    assert "empty_arm" in got["warnings"]
    assert all("empty_arm" in c["warnings"] for m in got["metrics"] for c in m["comparisons"])
    assert got["power"]["units_so_far"] == 0 and got["power"]["progress"] == 0.0


def test_results_need_a_reader_role_and_an_existing_experiment(
    client: Any, keys: dict[str, dict[str, str]]
) -> None:
    assert client.get("/v1/experiments/nope/results").status_code == 401
    assert client.get("/v1/experiments/nope/results", headers=keys["sdk"]).status_code == 403
    r = client.get("/v1/experiments/nope/results", headers=keys["viewer"])
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("correction", ["bonferroni", "bh"])
def test_family_uses_the_protocol_correction(
    client: Any,
    admin: dict[str, str],
    bodies: Any,
    make_metric: Any,
    ingest: Any,
    results: Any,
    raw: Raw,
    reference: Any,
    correction: str,
) -> None:
    _metrics(make_metric)
    _experiment(
        client,
        admin,
        bodies,
        analysis={
            "cuped": True,
            "pre_period_days": PRE_DAYS,
            "bayesian": True,
            "correction": correction,
        },
    )
    _simulate(raw, n=120, seed=7)
    ingest(raw.exposures + raw.conversions)
    got = results(KEY)
    expected = _reference(raw, reference, correction=correction)["result"]
    raw_p = [
        c["absolute"]["p_value"]
        for m in expected["metrics"]
        if m["role"] != "guardrail"
        for c in m["comparisons"]
    ]
    method = {"bonferroni": "bonferroni", "bh": "fdr_bh"}[correction]
    _, want, _, _ = multipletests(raw_p, method=method)
    have = [
        c["p_value_adjusted"]
        for m in got["metrics"]
        if m["role"] != "guardrail"
        for c in m["comparisons"]
    ]
    assert_allclose(have, want, rtol=1e-9)
    assert not math.isnan(sum(have))
