"""Each method against scipy / statsmodels / numpy computations on raw data, and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import integrate
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from stats.bayesian import gaussian_posterior
from stats.cuped import cuped_compare, cuped_theta
from stats.frequentist import normal_estimate, relative_lift, welch_test
from stats.guardrails import non_inferiority
from stats.multiple import adjust_p_values
from stats.ratio import compare_ratios, ratio_variance
from stats.sequential import confidence_sequence, sequential_rho
from stats.srm import srm_test
from stats.summaries import MeanSummary, RatioSummary

RNG_SEED = 20240601


def _moments(s: MeanSummary) -> tuple[float, float, int]:
    return s.mean, s.variance, s.n


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.01])
def test_welch_matches_scipy_on_raw_data(alpha: float) -> None:
    rng = np.random.default_rng(RNG_SEED)
    x = rng.lognormal(1.0, 0.8, size=57)
    y = rng.lognormal(1.1, 1.1, size=83)
    got = welch_test(
        *_moments(MeanSummary.from_array(x)), *_moments(MeanSummary.from_array(y)), alpha=alpha
    )
    # scipy: ttest_ind(y, x, equal_var=False) and its Welch confidence interval
    ref = sps.ttest_ind(y, x, equal_var=False)
    ci = ref.confidence_interval(confidence_level=1 - alpha)
    assert_allclose(got.estimate, y.mean() - x.mean(), rtol=1e-12)
    assert_allclose(got.p_value, ref.pvalue, rtol=1e-9)
    assert_allclose([got.ci_low, got.ci_high], [ci.low, ci.high], rtol=1e-9)
    assert_allclose(got.df, ref.df, rtol=1e-9)


def test_welch_on_binomial_uses_ddof1_variance() -> None:
    x = np.r_[np.ones(30), np.zeros(170)]
    y = np.r_[np.ones(45), np.zeros(155)]
    got = welch_test(
        *_moments(MeanSummary.from_binomial(200, 30)), *_moments(MeanSummary.from_binomial(200, 45))
    )
    ref = sps.ttest_ind(y, x, equal_var=False)  # scipy uses ddof = 1 on the 0/1 data
    assert_allclose(got.p_value, ref.pvalue, rtol=1e-9)
    assert_allclose(got.std_error, math.sqrt(x.var(ddof=1) / 200 + y.var(ddof=1) / 200), rtol=1e-12)


def test_relative_lift_delta_method_by_hand() -> None:
    # hand: means 10 and 11, variances 4 and 9, n 100 and 200
    # var = 9/200/100 + 121 * 4/100 / 10^4 = 0.00045 + 0.000484 = 0.000934
    got = relative_lift(10.0, 4.0, 100, 11.0, 9.0, 200, alpha=0.05)
    assert_allclose(got.estimate, 0.1, rtol=1e-12)
    assert_allclose(got.std_error, math.sqrt(0.000934), rtol=1e-12)
    half = sps.norm.ppf(0.975) * math.sqrt(0.000934)
    assert_allclose([got.ci_low, got.ci_high], [0.1 - half, 0.1 + half], rtol=1e-12)
    assert_allclose(got.p_value, 2 * sps.norm.sf(0.1 / math.sqrt(0.000934)), rtol=1e-9)


def test_ratio_delta_method_matches_numpy_gradient_on_raw_data() -> None:
    rng = np.random.default_rng(RNG_SEED + 1)
    den_c = rng.poisson(3.0, 400) + 1.0
    num_c = den_c * rng.gamma(2.0, 5.0, 400)
    den_t = rng.poisson(3.2, 350) + 1.0
    num_t = den_t * rng.gamma(2.0, 5.5, 350)

    def delta_var(num: np.ndarray, den: np.ndarray) -> float:
        cov = np.cov(np.vstack([num, den]), ddof=1)
        g = np.array([1 / den.mean(), -num.mean() / den.mean() ** 2])
        return float(g @ cov @ g / num.size)

    c, t = RatioSummary.from_arrays(num_c, den_c), RatioSummary.from_arrays(num_t, den_t)
    assert_allclose(ratio_variance(c), delta_var(num_c, den_c), rtol=1e-9)
    absolute, relative = compare_ratios(c, t, alpha=0.05)
    r_c, r_t = num_c.sum() / den_c.sum(), num_t.sum() / den_t.sum()
    v = delta_var(num_c, den_c) + delta_var(num_t, den_t)
    assert_allclose(absolute.estimate, r_t - r_c, rtol=1e-12)
    assert_allclose(absolute.p_value, 2 * sps.norm.sf(abs(r_t - r_c) / math.sqrt(v)), rtol=1e-9)
    v_rel = delta_var(num_t, den_t) / r_c**2 + r_t**2 * delta_var(num_c, den_c) / r_c**4
    assert_allclose(relative.estimate, r_t / r_c - 1, rtol=1e-12)
    assert_allclose(relative.std_error, math.sqrt(v_rel), rtol=1e-9)


def test_ratio_with_zero_denominator_is_nan_not_an_error() -> None:
    c = RatioSummary(10, 0.0, 0.0, 0.0, 0.0, 0.0)
    t = RatioSummary.from_arrays([1.0, 2.0, 3.0], [1.0, 1.0, 2.0])
    absolute, relative = compare_ratios(c, t)
    assert math.isnan(absolute.estimate) and math.isnan(relative.estimate)


def test_cuped_matches_welch_on_adjusted_raw_data() -> None:
    rng = np.random.default_rng(RNG_SEED + 2)
    pre_c, pre_t = rng.normal(10, 3, 300), rng.normal(10, 3, 320)
    y_c = 2 + 0.8 * pre_c + rng.normal(0, 2, 300)
    y_t = 2.5 + 0.8 * pre_t + rng.normal(0, 2, 320)
    c, t = MeanSummary.from_array(y_c, pre_c), MeanSummary.from_array(y_t, pre_t)
    # theta from the pooled sample of both arms (np.cov, ddof = 1)
    pre, y = np.r_[pre_c, pre_t], np.r_[y_c, y_t]
    theta = np.cov(y, pre, ddof=1)[0, 1] / pre.var(ddof=1)
    assert_allclose(cuped_theta(c, t), theta, rtol=1e-9)
    outcome = cuped_compare(c, t)
    assert outcome is not None
    adj_c, adj_t = y_c - theta * pre_c, y_t - theta * pre_t
    ref = sps.ttest_ind(adj_t, adj_c, equal_var=False)
    ci = ref.confidence_interval()
    res = outcome.result
    assert_allclose(res.absolute.estimate, adj_t.mean() - adj_c.mean(), rtol=1e-9)
    assert_allclose(res.absolute.p_value, ref.pvalue, rtol=1e-7)
    assert_allclose([res.absolute.ci_low, res.absolute.ci_high], [ci.low, ci.high], rtol=1e-9)
    se2_unadj = y_c.var(ddof=1) / 300 + y_t.var(ddof=1) / 320
    se2_adj = adj_c.var(ddof=1) / 300 + adj_t.var(ddof=1) / 320
    assert_allclose(res.variance_reduction, 1 - se2_adj / se2_unadj, rtol=1e-9)
    assert_allclose(res.relative.estimate, (adj_t.mean() - adj_c.mean()) / y_c.mean(), rtol=1e-9)


def test_cuped_without_covariate_variance_returns_none() -> None:
    c = MeanSummary.from_array([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])
    t = MeanSummary.from_array([2.0, 2.0, 4.0], [5.0, 5.0, 5.0])
    assert cuped_compare(c, t) is None


def test_sequential_rho_and_halfwidth_by_hand() -> None:
    # alpha = 0.05: -2 ln a = 5.991464547; ln(1 + 5.991464547) = 1.944691; sum 7.936156
    rho = sequential_rho(0.05, 5000)
    assert_allclose(rho**2, 7.936156 / 5000, rtol=1e-6)
    # N = 5000, V = 1e-4: N rho^2 + 1 = 8.936156; s^2 = 0.5
    got = confidence_sequence(0.0, 1e-4, 5000)
    tr = 8.936156
    half = math.sqrt(0.5) * math.sqrt(2 * tr * math.log(math.sqrt(tr) / 0.05) / (5000**2 * rho**2))
    assert_allclose(got.ci_high, half, rtol=1e-6)
    assert got.p_value == 1.0


def test_bayesian_flat_prior_closed_forms_and_expected_loss_by_quadrature() -> None:
    lift, var = 0.03, 0.02**2
    res = gaussian_posterior(lift, var)
    assert_allclose(res.chance_to_win, sps.norm.cdf(1.5), rtol=1e-12)
    post = sps.norm(lift, 0.02)
    loss_ship = integrate.quad(lambda x: max(0.0, -x) * post.pdf(x), -1, 1, points=[0.0])[0]
    loss_ctrl = integrate.quad(lambda x: max(0.0, x) * post.pdf(x), -1, 1, points=[0.0])[0]
    assert_allclose(res.expected_loss, loss_ship, rtol=1e-7)
    assert_allclose(res.expected_loss_control, loss_ctrl, rtol=1e-7)
    assert_allclose([res.ci_low, res.ci_high], post.ppf([0.025, 0.975]), rtol=1e-12)
    lower = gaussian_posterior(lift, var, higher_is_better=False)
    assert_allclose(lower.chance_to_win, 1 - res.chance_to_win, rtol=1e-12)
    assert_allclose(lower.expected_loss, res.expected_loss_control, rtol=1e-12)


def test_bayesian_normal_prior_is_the_conjugate_update() -> None:
    # hand: precision = 1/0.0004 + 1/0.0025 = 2500 + 400 = 2900; mean = (0.03*2500 + 0)/2900
    res = gaussian_posterior(0.03, 0.0004, prior_mean=0.0, prior_sd=0.05)
    assert_allclose(res.posterior_mean, 75 / 2900, rtol=1e-12)
    assert_allclose(res.posterior_sd, math.sqrt(1 / 2900), rtol=1e-12)
    with pytest.raises(ValueError):
        gaussian_posterior(0.03, 0.0004, prior_mean=0.0)
    with pytest.raises(ValueError):
        gaussian_posterior(0.03, 0.0004, prior_mean=0.0, prior_sd=0.0)


@pytest.mark.parametrize(
    ("lift", "se", "higher", "status"),
    [
        (0.0, 0.005, True, "pass"),  # harm 0, upper bound 0.0082 < 0.02
        (-0.05, 0.005, True, "fail"),  # harm 0.05, lower bound 0.0418 > 0.02
        (-0.015, 0.01, True, "inconclusive"),
        (0.05, 0.005, False, "fail"),  # lower is better: +5 % is harm
        (-0.05, 0.005, False, "pass"),
        (0.0, math.nan, True, "inconclusive"),
    ],
)
def test_guardrail_verdicts(lift: float, se: float, higher: bool, status: str) -> None:
    res = non_inferiority(lift, se, margin=0.02, higher_is_better=higher, alpha=0.05)
    assert res.status == status


def test_guardrail_p_value_by_hand() -> None:
    # harm = 0.01, margin 0.02, se 0.005: z = -2, p = Phi(-2) = 0.0227501319
    res = non_inferiority(-0.01, 0.005, margin=0.02)
    assert_allclose(res.p_value, 0.022750131948179, rtol=1e-9)
    with pytest.raises(ValueError):
        non_inferiority(0.0, 0.01, margin=0.0)


def test_srm_with_three_arms_matches_scipy_chisquare() -> None:
    obs = {"a": 3310, "b": 3410, "c": 3280}
    w = {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}
    ref = sps.chisquare([3310, 3410, 3280], [10000 / 3] * 3)
    got = srm_test(obs, w)
    assert_allclose(got.p_value, ref.pvalue, rtol=1e-9)
    assert not got.mismatch


def test_srm_misuse_and_no_units() -> None:
    assert srm_test({"a": 0, "b": 0}, {"a": 1, "b": 1}).p_value == 1.0
    with pytest.raises(ValueError):
        srm_test({"a": 1}, {"a": 1, "b": 1})
    with pytest.raises(ValueError):
        srm_test({"a": 1, "b": -1}, {"a": 1, "b": 1})
    with pytest.raises(ValueError):
        srm_test({"a": 1, "b": 1}, {"a": 1, "b": 0})


@pytest.mark.parametrize(
    ("ours", "theirs"), [("holm", "holm"), ("bh", "fdr_bh"), ("bonferroni", "bonferroni")]
)
def test_corrections_match_statsmodels(ours: str, theirs: str) -> None:
    rng = np.random.default_rng(RNG_SEED + 3)
    p = np.r_[rng.uniform(0, 0.05, 6), rng.uniform(0, 1, 14)]
    expected = multipletests(p, method=theirs)[1]
    assert_allclose(adjust_p_values(list(p), ours), expected, rtol=1e-12)


def test_corrections_skip_nan_and_reject_misuse() -> None:
    got = adjust_p_values([0.01, math.nan, 0.04], "bonferroni")
    assert_allclose(got, [0.02, math.nan, 0.08])
    assert adjust_p_values([0.2, 0.3], "none") == [0.2, 0.3]
    with pytest.raises(ValueError):
        adjust_p_values([0.1], "sidak")
    with pytest.raises(ValueError):
        adjust_p_values([1.5], "holm")


def test_data_conditions_give_nan_not_exceptions() -> None:
    assert math.isnan(welch_test(1.0, math.nan, 1, 2.0, 1.0, 10).p_value)
    zero = welch_test(1.0, 0.0, 10, 1.0, 0.0, 10)
    assert zero.std_error == 0.0 and math.isnan(zero.p_value)
    assert math.isnan(relative_lift(0.0, 1.0, 10, 1.0, 1.0, 10).estimate)
    assert math.isnan(normal_estimate(1.0, -1.0).p_value)
    with pytest.raises(ValueError):
        welch_test(1.0, 1.0, 10, 1.0, 1.0, 10, alpha=1.0)
    with pytest.raises(ValueError):
        confidence_sequence(0.1, 0.01, 100, n_star=0)


def test_summaries_validate_and_combine() -> None:
    a = MeanSummary.from_array([1.0, 2.0], [0.5, 1.5])
    b = MeanSummary.from_array([3.0, 4.0, 5.0], [2.0, 2.5, 3.0])
    both = MeanSummary.from_array([1.0, 2.0, 3.0, 4.0, 5.0], [0.5, 1.5, 2.0, 2.5, 3.0])
    assert (a + b) == both
    assert_allclose(both.variance, np.var([1, 2, 3, 4, 5], ddof=1))
    r = RatioSummary.from_arrays([1.0, 2.0], [2.0, 2.0]) + RatioSummary.from_arrays([3.0], [4.0])
    assert r == RatioSummary.from_arrays([1.0, 2.0, 3.0], [2.0, 2.0, 4.0])
    for bad in (
        lambda: MeanSummary(-1, 0.0, 0.0),
        lambda: MeanSummary(0, 1.0, 1.0),
        lambda: MeanSummary(3, 1.0, -1.0),
        lambda: MeanSummary(3, 1.0, 1.0, 1.0),
        lambda: MeanSummary(3, "1.0", 1.0),  # type: ignore[arg-type]
        lambda: MeanSummary.from_binomial(10, 11),
        lambda: RatioSummary(-2, 0, 0, 0, 0, 0),
    ):
        with pytest.raises(ValueError):
            bad()
    # An overflowed sum is a data condition (values stored before ingestion bounded them),
    # not misuse: accepted, and flagged for the engine.
    assert not MeanSummary(3, 1.0, math.inf).finite
    assert not RatioSummary(3, 1.0, 1.0, math.nan, 1.0, 1.0).finite
    assert MeanSummary(3, 1.0, 1.0).finite and r.finite
    assert math.isnan(MeanSummary(1, 2.0, 4.0).variance)
    assert math.isnan(MeanSummary(0, 0.0, 0.0).mean)
