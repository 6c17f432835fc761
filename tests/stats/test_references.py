"""The engine against published vectors (GrowthBook gbstats) and hand-worked closed forms."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from numpy.testing import assert_allclose

from stats.cuped import cuped_compare
from stats.frequentist import relative_lift, welch_test
from stats.sequential import confidence_sequence
from stats.srm import srm_test
from stats.summaries import MeanSummary

# gbstats rounds to 5 decimals
ROUNDED = 5.1e-6


def _summary(d: dict[str, Any]) -> MeanSummary:
    if "pre_sum" in d:
        return MeanSummary(
            d["n"],
            d["sum"],
            d["sum_squares"],
            d["pre_sum"],
            d["pre_sum_squares"],
            d["post_pre_sum_of_products"],
        )
    return MeanSummary(d["n"], d["sum"], d["sum_squares"])


def _moments(s: MeanSummary) -> tuple[float, float, int]:
    return s.mean, s.variance, s.n


def test_welch_absolute_matches_gbstats(reference: Callable[[str], Any]) -> None:
    v = reference("gbstats")["welch_absolute"]
    got = welch_test(*_moments(_summary(v["control"])), *_moments(_summary(v["treatment"])))
    assert_allclose(got.estimate, v["expected"], atol=ROUNDED)
    assert_allclose([got.ci_low, got.ci_high], v["ci"], atol=ROUNDED)
    assert_allclose(got.std_error, v["std_error"], atol=ROUNDED)
    assert_allclose(got.p_value, v["p_value"], atol=ROUNDED)


def test_relative_lift_point_and_delta_se_match_gbstats(reference: Callable[[str], Any]) -> None:
    v = reference("gbstats")["relative"]
    got = relative_lift(*_moments(_summary(v["control"])), *_moments(_summary(v["treatment"])))
    assert_allclose(got.estimate, v["expected"], atol=ROUNDED)
    assert_allclose(got.std_error, v["std_error"], atol=ROUNDED)


def test_sequential_relative_matches_gbstats(reference: Callable[[str], Any]) -> None:
    v = reference("gbstats")["sequential_relative"]
    c, t = _summary(v["control"]), _summary(v["treatment"])
    rel = relative_lift(*_moments(c), *_moments(t))
    got = confidence_sequence(rel.estimate, rel.std_error**2, c.n + t.n, n_star=v["n_star"])
    assert_allclose(got.estimate, v["expected"], atol=ROUNDED)
    assert_allclose([got.ci_low, got.ci_high], v["ci"], atol=ROUNDED)
    assert_allclose(got.p_value, v["p_value"], atol=ROUNDED)


def test_sequential_proportion_matches_gbstats_with_its_ddof0_variance(
    reference: Callable[[str], Any],
) -> None:
    v = reference("gbstats")["sequential_proportion"]
    nc, nt = v["control"]["n"], v["treatment"]["n"]
    pc, pt = v["control"]["sum"] / nc, v["treatment"]["sum"] / nt
    # gbstats' ProportionStatistic uses p(1 - p); feed the same variance to the core function
    var = pt * (1 - pt) / (nt * pc**2) + pc * (1 - pc) * pt**2 / (nc * pc**4)
    got = confidence_sequence((pt - pc) / pc, var, nc + nt, n_star=v["n_star"])
    assert_allclose(got.estimate, v["expected"], atol=ROUNDED)
    assert_allclose([got.ci_low, got.ci_high], v["ci"], atol=ROUNDED)
    assert_allclose(got.std_error, v["std_error"], atol=ROUNDED)
    assert got.p_value < 1e-40  # gbstats rounds it to 0.0


def test_sequential_cuped_matches_gbstats(reference: Callable[[str], Any]) -> None:
    v = reference("gbstats")["sequential_cuped"]
    c, t = _summary(v["control"]), _summary(v["treatment"])
    outcome = cuped_compare(c, t)
    assert outcome is not None
    rel = outcome.result.relative
    assert_allclose(rel.estimate, v["expected"], atol=ROUNDED)
    assert_allclose(rel.std_error, v["std_error"], atol=ROUNDED)
    got = confidence_sequence(rel.estimate, rel.std_error**2, c.n + t.n, n_star=v["n_star"])
    assert_allclose([got.ci_low, got.ci_high], v["ci"], atol=ROUNDED)
    assert_allclose(got.p_value, v["p_value"], atol=ROUNDED)


def test_srm_matches_hand_worked_chi_square(reference: Callable[[str], Any]) -> None:
    for case in reference("srm")["cases"]:
        got = srm_test(case["observed"], case["weights"])
        assert_allclose(got.statistic, case["statistic"], rtol=1e-12)
        assert_allclose(got.p_value, case["p_value"], rtol=1e-9)
        assert got.mismatch
