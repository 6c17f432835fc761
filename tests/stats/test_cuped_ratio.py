"""CUPED for ratio metrics against an independent regression on the per-unit values, and its
A/A false-positive rate."""

from __future__ import annotations

import math

import numpy as np
import statsmodels.api as sm
from numpy.testing import assert_allclose

import stats
from stats.cuped import cuped_ratio_compare
from stats.ratio import compare_ratios
from stats.summaries import RatioSummary

ALPHA = 0.05


def _arm(rng: np.random.Generator, n: int, lift: float) -> tuple[np.ndarray, ...]:
    # sessions (denominator) and revenue (numerator) per unit: a unit's activity drives its
    # sessions and its spend per session persists, so both correlate with the pre-period
    activity = rng.gamma(2.0, 1.0, n)
    spend = rng.gamma(2.0, 5.0, n)
    den_pre = rng.poisson(1.0 + 2.0 * activity).astype(float)
    num_pre = den_pre * spend * rng.lognormal(0.0, 0.3, n)
    den = rng.poisson(1.0 + 2.0 * activity).astype(float)
    num = den * spend * rng.lognormal(0.0, 0.3, n) * (1.0 + lift)
    return num, den, num_pre, den_pre


def test_adjusted_estimate_equals_a_regression_on_the_per_unit_values() -> None:
    rng = np.random.default_rng(2018)
    arms = [_arm(rng, 3000, 0.0), _arm(rng, 2500, 0.04)]
    c, t = (RatioSummary.from_arrays(*a) for a in arms)
    got = cuped_ratio_compare(c, t)
    assert got is not None

    # independent: the delta-method linearisation per unit, theta by OLS of Y on X over every
    # unit, then OLS of the adjusted values on the treatment indicator with HC2 errors (the
    # unequal-variance two-sample standard error)
    ys, xs, level, pre_level = [], [], [], []
    for num, den, num_pre, den_pre in arms:
        r, rp = num.mean() / den.mean(), num_pre.mean() / den_pre.mean()
        ys.append((num - r * den) / den.mean())
        xs.append((num_pre - rp * den_pre) / den_pre.mean())
        level.append(np.full(num.size, r))
        pre_level.append(np.full(num.size, rp))
    y, x = np.concatenate(ys), np.concatenate(xs)
    theta = sm.OLS(y, x).fit().params[0]
    adjusted = np.concatenate(level) + y - theta * (np.concatenate(pre_level) + x)
    treated = np.concatenate([np.zeros(arms[0][0].size), np.ones(arms[1][0].size)])
    fit = sm.OLS(adjusted, sm.add_constant(treated)).fit(cov_type="HC2")

    assert_allclose(got.result.theta, theta, rtol=1e-9)
    assert_allclose(got.result.absolute.estimate, fit.params[1], rtol=1e-9)
    assert_allclose(got.result.absolute.std_error, fit.bse[1], rtol=1e-9)
    unadjusted, _ = compare_ratios(c, t)
    assert_allclose(
        got.result.variance_reduction,
        1 - fit.bse[1] ** 2 / unadjusted.std_error**2,
        rtol=1e-9,
    )
    assert got.result.variance_reduction > 0.2


def test_analyze_reports_ratio_cuped_beside_the_unadjusted_result() -> None:
    rng = np.random.default_rng(7)
    c, t = (RatioSummary.from_arrays(*_arm(rng, 800, lift)) for lift in (0.0, 0.05))
    res = stats.analyze(
        [stats.MetricInput("aov", "ratio", {"control": c, "b": t})], control="control"
    )
    comp = res.metrics[0].comparisons[0]
    assert comp.cuped_applied and comp.cuped is not None
    assert "cuped_not_supported" not in comp.warnings
    direct = cuped_ratio_compare(c, t)
    assert direct is not None
    assert comp.cuped == direct.result
    # the decision still reads the unadjusted test (product.md §6)
    assert_allclose(comp.absolute.estimate, t.ratio - c.ratio, rtol=1e-12)


def test_aa_false_positive_rate_of_ratio_cuped_is_alpha() -> None:
    rng = np.random.default_rng(19)
    experiments, n = 2000, 400
    rejected = 0
    for _ in range(experiments):
        c, t = (RatioSummary.from_arrays(*_arm(rng, n, 0.0)) for _ in range(2))
        outcome = cuped_ratio_compare(c, t)
        assert outcome is not None
        rejected += outcome.result.absolute.p_value < ALPHA
    rate = rejected / experiments
    se = math.sqrt(ALPHA * (1 - ALPHA) / experiments)
    assert abs(rate - ALPHA) <= 3 * se, (rate, se)
