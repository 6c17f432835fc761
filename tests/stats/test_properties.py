"""Invariants checked with hypothesis."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from stats.frequentist import relative_lift, welch_test
from stats.sequential import confidence_sequence

means = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)
positive_means = st.floats(min_value=0.1, max_value=1e3)
variances = st.floats(min_value=1e-3, max_value=1e4)
counts = st.integers(min_value=2, max_value=100_000)
alphas = st.sampled_from([0.01, 0.05, 0.1, 0.2])
# the confidence sequence is asymptotic: compared with the t interval from 30 units per arm
large_counts = st.integers(min_value=30, max_value=100_000)


@settings(max_examples=200, deadline=None)
@given(means, variances, counts, means, variances, counts, alphas)
def test_swapping_arms_negates_the_absolute_effect(
    mc: float, vc: float, nc: int, mt: float, vt: float, nt: int, alpha: float
) -> None:
    ab = welch_test(mc, vc, nc, mt, vt, nt, alpha=alpha)
    ba = welch_test(mt, vt, nt, mc, vc, nc, alpha=alpha)
    assert math.isclose(ab.estimate, -ba.estimate, rel_tol=1e-12, abs_tol=1e-12)
    assert math.isclose(ab.ci_low, -ba.ci_high, rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(ab.p_value, ba.p_value, rel_tol=1e-9, abs_tol=1e-300)


@settings(max_examples=200, deadline=None)
@given(positive_means, variances, counts, means, variances, counts, alphas)
def test_intervals_contain_the_estimate_and_p_is_a_probability(
    mc: float, vc: float, nc: int, mt: float, vt: float, nt: int, alpha: float
) -> None:
    for est in (
        welch_test(mc, vc, nc, mt, vt, nt, alpha=alpha),
        relative_lift(mc, vc, nc, mt, vt, nt, alpha=alpha),
    ):
        assert est.ci_low <= est.estimate <= est.ci_high
        assert 0.0 <= est.p_value <= 1.0


@settings(max_examples=200, deadline=None)
@given(positive_means, variances, large_counts, means, variances, large_counts, alphas)
def test_sequential_intervals_contain_the_fixed_ones(
    mc: float, vc: float, nc: int, mt: float, vt: float, nt: int, alpha: float
) -> None:
    for fixed in (
        welch_test(mc, vc, nc, mt, vt, nt, alpha=alpha),
        relative_lift(mc, vc, nc, mt, vt, nt, alpha=alpha),
    ):
        seq = confidence_sequence(fixed.estimate, fixed.std_error**2, nc + nt, alpha=alpha)
        assert seq.ci_low <= fixed.ci_low + 1e-12 * abs(fixed.ci_low)
        assert seq.ci_high >= fixed.ci_high - 1e-12 * abs(fixed.ci_high)
        # a sequential rejection at alpha implies a fixed-horizon one
        assert not (seq.p_value < alpha) or fixed.p_value < alpha


@settings(max_examples=200, deadline=None)
@given(means, variances, counts, means, variances, counts, st.integers(1, 10_000))
def test_more_data_never_widens_a_fixed_interval_for_the_same_variance(
    mc: float, vc: float, nc: int, mt: float, vt: float, nt: int, extra: int
) -> None:
    small = welch_test(mc, vc, nc, mt, vt, nt)
    larger = welch_test(mc, vc, nc + extra, mt, vt, nt + extra)
    assert larger.ci_high - larger.ci_low <= (small.ci_high - small.ci_low) * (1 + 1e-12)
