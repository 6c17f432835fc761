"""The entry point: wiring, family-wide correction, warnings and the JSON shape."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from statsmodels.stats.multitest import multipletests

from stats import (
    WARNING_CODES,
    AnalysisSettings,
    MeanSummary,
    MetricInput,
    RatioSummary,
    SrmInput,
    analyze,
)
from stats.frequentist import welch_test


def _mean_metric(key: str, role: str, seed: int, shift: float = 0.0, **kw: object) -> MetricInput:
    rng = np.random.default_rng(seed)
    variants = {}
    for i, arm in enumerate(("control", "b", "c")):
        pre = rng.normal(10, 2, 500)
        x = pre + rng.normal(shift * i, 2, 500)
        variants[arm] = MeanSummary.from_array(x, pre)
    return MetricInput(key=key, type="mean", variants=variants, role=role, **kw)  # type: ignore[arg-type]


def test_family_is_primary_and_secondary_times_treatments_with_holm() -> None:
    metrics = [
        _mean_metric("p", "primary", 1, shift=0.3),
        _mean_metric("s", "secondary", 2, shift=0.1),
        _mean_metric("g", "guardrail", 3, guardrail_margin=0.05),
    ]
    res = analyze(metrics, control="control", settings=AnalysisSettings(cuped=False))
    family = [c for m in res.metrics[:2] for c in m.comparisons]
    raw = [c.absolute.p_value for c in family]
    expected = multipletests(raw, method="holm")[1]
    assert_allclose([c.p_value_adjusted for c in family], expected, rtol=1e-12)
    for c in family:
        assert c.significant == (c.p_value_adjusted < 0.05)
    g = res.metrics[2].comparisons[0]
    assert g.p_value_adjusted == g.absolute.p_value  # outside the family
    assert g.guardrail is not None and g.guardrail.margin == 0.05


def test_cuped_is_reported_beside_the_unadjusted_test_that_drives_the_decision() -> None:
    m = _mean_metric("p", "primary", 4, shift=0.2)
    res = analyze([m], control="control", settings=AnalysisSettings(cuped=True, correction="none"))
    comp = res.metrics[0].comparisons[0]
    assert comp.cuped_applied and comp.cuped is not None
    c, t = m.variants["control"], m.variants["b"]
    assert isinstance(c, MeanSummary) and isinstance(t, MeanSummary)
    plain = welch_test(c.mean, c.variance, c.n, t.mean, t.variance, t.n)
    assert comp.absolute == plain
    assert comp.p_value_adjusted == plain.p_value  # product.md §6: the absolute test's p-value
    assert comp.cuped.absolute.p_value != plain.p_value
    assert comp.cuped.variance_reduction > 0.3  # x = pre + noise of equal variance: rho^2 = 0.5


def test_sequential_decision_uses_always_valid_p_value() -> None:
    m = _mean_metric("p", "primary", 5, shift=0.2)
    s = AnalysisSettings(cuped=False, sequential=True, n_star=1000, correction="none")
    comp = analyze([m], control="control", settings=s).metrics[0].comparisons[0]
    assert comp.inference == "sequential" and comp.sequential is not None
    assert comp.p_value_adjusted == comp.sequential.absolute.p_value
    assert comp.sequential.absolute.ci_low <= comp.absolute.ci_low
    assert comp.sequential.absolute.ci_high >= comp.absolute.ci_high


def test_data_conditions_come_back_as_warning_codes() -> None:
    metrics = [
        MetricInput(
            key="empty",
            type="binomial",
            variants={"control": MeanSummary(0, 0.0, 0.0), "b": MeanSummary.from_binomial(10, 3)},
        ),
        MetricInput(
            key="flat",
            type="mean",
            variants={
                "control": MeanSummary.from_array([2.0] * 5),
                "b": MeanSummary.from_array([2.0] * 5),
            },
        ),
        MetricInput(
            key="one",
            type="mean",
            variants={
                "control": MeanSummary.from_array([1.0]),
                "b": MeanSummary.from_array([2.0, 3.0]),
            },
        ),
        MetricInput(
            key="ratio0",
            type="ratio",
            variants={
                "control": RatioSummary.from_arrays([0.0, 0.0], [0.0, 0.0]),
                "b": RatioSummary.from_arrays([1.0, 2.0], [1.0, 3.0]),
            },
        ),
        MetricInput(
            key="nocov",
            type="mean",
            variants={
                "control": MeanSummary.from_array([1.0, 2.0, 4.0]),
                "b": MeanSummary.from_array([1.0, 5.0]),
            },
            role="guardrail",
        ),
        MetricInput(
            key="missing",
            type="mean",
            variants={"control": MeanSummary.from_array([1.0, 2.0, 4.0])},
        ),
    ]
    res = analyze(
        metrics, control="control", settings=AnalysisSettings(bayesian=True, sequential=True)
    )
    w = {m.metric: m.comparisons[0].warnings for m in res.metrics}
    assert "empty_arm" in w["empty"]
    assert "zero_variance" in w["flat"]
    assert "insufficient_data" in w["one"]
    assert "zero_denominator" in w["ratio0"] and "cuped_missing_covariate" in w["ratio0"]
    assert "cuped_missing_covariate" in w["nocov"] and "guardrail_missing_margin" in w["nocov"]
    assert w["missing"] == ("missing_variant",)
    assert all(code in WARNING_CODES for codes in w.values() for code in codes)
    for m in res.metrics:
        assert not m.comparisons[0].significant
    payload = res.to_dict()
    text = json.dumps(payload, allow_nan=False)  # NaN must have become null
    assert '"p_value": null' in text


def test_to_dict_has_the_contract_shape() -> None:
    m = _mean_metric("p", "primary", 6, shift=0.2)
    settings = AnalysisSettings(cuped=True, sequential=True, bayesian=True)
    srm = SrmInput(
        units={"control": 500, "b": 500, "c": 500}, weights={"control": 1, "b": 1, "c": 1}
    )
    d = analyze([m], control="control", settings=settings, srm=srm).to_dict()
    assert d["srm"]["p_value"] == 1.0 and d["srm"]["mismatch"] is False
    comp = d["metrics"][0]["comparisons"][0]
    for key in ("estimate", "ci_low", "ci_high", "p_value"):
        assert isinstance(comp["absolute"][key], float)
        assert isinstance(comp["relative"][key], float)
    assert set(comp["cuped"]) >= {"absolute", "relative", "theta", "variance_reduction"}
    assert set(comp["bayesian"]) >= {"chance_to_win", "expected_loss", "ci_low", "ci_high"}
    assert set(comp["sequential"]) >= {"absolute", "relative", "n_star"}
    assert comp["guardrail"] is None and isinstance(comp["warnings"], list)
    assert [v["variant"] for v in d["metrics"][0]["variants"]] == ["control", "b", "c"]
    json.dumps(d, allow_nan=False)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": 0.0},
        {"alpha": 1.5},
        {"correction": "sidak"},
        {"n_star": 0.0},
        {"prior_mean": 0.0},
        {"prior_mean": 0.0, "prior_sd": -1.0},
        {"srm_threshold": 0.0},
    ],
)
def test_invalid_settings_raise(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        AnalysisSettings(**kwargs)  # type: ignore[arg-type]


def test_misuse_of_inputs_raises() -> None:
    m = _mean_metric("p", "primary", 7)
    with pytest.raises(ValueError, match="control"):
        analyze([m], control="nope")
    with pytest.raises(ValueError, match="unique"):
        analyze([m, m], control="control")
    with pytest.raises(ValueError, match="RatioSummary"):
        MetricInput(key="r", type="ratio", variants={"control": MeanSummary(1, 1.0, 1.0)})
    with pytest.raises(ValueError, match="margin"):
        MetricInput(key="g", type="mean", variants={}, role="guardrail", guardrail_margin=-0.1)


def test_lower_is_better_guardrail_fails_on_a_large_increase() -> None:
    rng = np.random.default_rng(8)
    c = MeanSummary.from_array(rng.normal(100, 10, 4000))
    t = MeanSummary.from_array(rng.normal(120, 10, 4000))  # +20 % latency
    m = MetricInput(
        key="latency",
        type="mean",
        variants={"control": c, "b": t},
        role="guardrail",
        higher_is_better=False,
        guardrail_margin=0.05,
    )
    comp = analyze([m], control="control").metrics[0].comparisons[0]
    assert comp.guardrail is not None and comp.guardrail.status == "fail"
    assert math.isclose(comp.guardrail.harm, comp.relative.estimate)
