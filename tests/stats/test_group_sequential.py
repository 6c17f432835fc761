"""Group sequential designs: bounds against published tables and an independent integration,
error rate under ten looks and power at the planned sample size, by simulation."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import optimize
from scipy.stats import multivariate_normal, norm

import stats
from stats.frequentist import welch_test
from stats.group_sequential import crossing_probabilities, efficacy_bounds, spent_alpha
from stats.sequential import confidence_sequence
from stats.summaries import MeanSummary

ALPHA = 0.05


@pytest.mark.parametrize(
    "case",
    ["obrien_fleming_five_equal_looks", "obrien_fleming_two_looks", "obrien_fleming_uneven_looks"],
)
def test_obrien_fleming_bounds_match_r_ldbounds(reference: Callable[[str], Any], case: str) -> None:
    v = reference("group_sequential")[case]
    got = efficacy_bounds(v["information_fractions"], alpha=v["alpha"])
    assert_allclose([b.bound for b in got], v["bounds"], atol=v["tolerance"])
    assert_allclose(got[-1].alpha_spent, v["alpha"], rtol=1e-12)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_power_family_bounds_match_r_ldbounds_and_spotify_confidence(
    reference: Callable[[str], Any], index: int
) -> None:
    v = reference("group_sequential")["power_family"]
    case = v["cases"][index]
    got = efficacy_bounds(
        case["information_fractions"], alpha=v["alpha"], spending="power", rho=case["rho"]
    )
    assert_allclose([b.bound for b in got], case["ldbounds"], atol=v["tolerance"])
    assert_allclose([b.bound for b in got], case["spotify_confidence"], atol=v["tolerance"])


def test_where_ldbounds_grid_misses_the_spending_ours_spends_it(
    reference: Callable[[str], Any],
) -> None:
    # ten equal looks: ldbounds' second bound (4.8989) spends less than alpha(0.2); ours spends
    # it (scipy's multivariate normal of the first two looks), and from look 4 on they agree
    v = reference("group_sequential")["obrien_fleming_ten_equal_looks_ldbounds_grid_error"]
    t = v["information_fractions"]
    got = [b.bound for b in efficacy_bounds(t, alpha=v["alpha"])]
    start = v["agree_from_look"] - 1
    assert_allclose(got[start:], v["bounds"][start:], atol=v["tolerance"])
    cov = np.sqrt(np.minimum.outer(t[:2], t[:2]) / np.maximum.outer(t[:2], t[:2]))
    mvn = multivariate_normal(np.zeros(2), cov, abseps=1e-12, releps=1e-10)
    target = spent_alpha(t[1], alpha=v["alpha"])

    def spent(bounds: list[float]) -> float:
        c = np.array(bounds[:2])
        return float(1.0 - mvn.cdf(c, lower_limit=-c))

    assert_allclose(spent(got), target, rtol=1e-6)
    assert abs(spent(v["bounds"]) - target) > 0.05 * target


def test_power_family_maximum_information_matches_jennison_turnbull(
    reference: Callable[[str], Any],
) -> None:
    v = reference("group_sequential")["power_family_max_information"]
    fixed = norm.ppf(1 - v["alpha"] / 2) + norm.ppf(v["power"])
    for case in v["cases"]:
        ts = [i / case["looks"] for i in range(1, case["looks"] + 1)]
        bounds = [b.bound for b in efficacy_bounds(ts, spending="power", rho=case["rho"])]
        drift = optimize.brentq(
            lambda d, ts=ts, bounds=bounds: (
                sum(crossing_probabilities(ts, bounds, drift=d)) - v["power"]
            ),
            1.0,
            6.0,
        )
        assert_allclose(100 * (drift / fixed) ** 2, case["ratio_percent"], atol=0.051)


@pytest.mark.parametrize(
    ("fractions", "spending", "rho"),
    [
        ([0.13, 0.37, 0.52, 0.9, 1.0], "obrien_fleming", None),
        ([0.2, 0.45, 0.7, 1.0], "power", 1.0),
        ([0.05, 0.3, 0.61, 0.8], "power", 2.5),
    ],
)
def test_each_look_spends_its_alpha_in_the_multivariate_normal_of_the_looks(
    fractions: list[float], spending: str, rho: float | None
) -> None:
    # independent reference: scipy's multivariate normal CDF (Genz' quasi-Monte Carlo) of the
    # looks' z statistics, corr(Z_i, Z_j) = sqrt(t_i / t_j)
    got = efficacy_bounds(fractions, alpha=ALPHA, spending=spending, rho=rho)  # type: ignore[arg-type]
    t = np.array(fractions)
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    for k in range(1, len(t) + 1):
        c = np.array([b.bound for b in got[:k]])
        mvn = multivariate_normal(np.zeros(k), cov[:k, :k], abseps=1e-8, releps=1e-8)
        stayed = mvn.cdf(c, lower_limit=-c)
        expected = spent_alpha(fractions[k - 1], alpha=ALPHA, spending=spending, rho=rho)  # type: ignore[arg-type]
        assert_allclose(1.0 - stayed, expected, atol=2e-6)


def test_bounds_of_earlier_looks_do_not_depend_on_later_ones() -> None:
    # looks as they happen: adding a look never changes the bounds already used
    early = efficacy_bounds([0.1, 0.25, 0.4])
    late = efficacy_bounds([0.1, 0.25, 0.4, 0.55, 0.93])
    assert early == late[:3]
    nominal = [b.nominal_alpha for b in late]
    assert nominal == sorted(nominal)
    assert_allclose([b.nominal_alpha for b in late], [2 * norm.sf(b.bound) for b in late])


def test_a_look_past_the_horizon_has_nothing_left_to_spend() -> None:
    got = efficacy_bounds([0.5, 1.0, 1.2])
    assert got[1].alpha_spent == ALPHA
    assert got[2].information_fraction == 1.0
    assert math.isinf(got[2].bound) and got[2].nominal_alpha == 0.0
    with pytest.raises(ValueError, match="increase strictly"):
        efficacy_bounds([0.5, 0.5])
    with pytest.raises(ValueError, match="rho"):
        efficacy_bounds([0.5], spending="power")


def test_analyze_reads_the_current_look_and_rescales_the_family() -> None:
    design = stats.GroupSequentialDesign([0.25, 0.5])
    c = MeanSummary.from_binomial(5000, 500)
    t = MeanSummary.from_binomial(5000, 590)
    result = stats.analyze(
        [stats.MetricInput("m", "binomial", {"c": c, "b": t})],
        control="c",
        settings=stats.AnalysisSettings(cuped=False, group_sequential=design),
    )
    assert result.looks is not None and len(result.looks) == 2
    comp = result.metrics[0].comparisons[0]
    gs = comp.group_sequential
    assert gs is not None and comp.inference == "group_sequential"
    se = math.sqrt(c.variance / 5000 + t.variance / 5000)
    z = 0.018 / se
    assert_allclose(gs.absolute.p_value, 2 * norm.sf(z), rtol=1e-9)
    assert_allclose(gs.absolute.ci_high - gs.absolute.ci_low, 2 * gs.bound * se, rtol=1e-9)
    assert gs.crossed == (z >= gs.bound)
    assert comp.significant == gs.crossed
    assert_allclose(comp.p_value_adjusted, 2 * norm.sf(z) * ALPHA / gs.nominal_alpha, rtol=1e-9)


def _welch_z(sums: np.ndarray, sq: np.ndarray, n: int) -> tuple[float, float, float]:
    c = MeanSummary(n, float(sums[0]), float(sq[0]))
    t = MeanSummary(n, float(sums[1]), float(sq[1]))
    w = welch_test(c.mean, c.variance, n, t.mean, t.variance, n)
    return w.estimate, w.std_error, w.estimate / w.std_error


def _simulate(
    rng: np.random.Generator, experiments: int, looks: int, per_look: int, effect: float
) -> tuple[np.ndarray, np.ndarray]:
    x = rng.exponential(2.0, size=(experiments, 2, looks, per_look))
    x[:, 1] += effect
    return np.cumsum(x.sum(axis=3), axis=2), np.cumsum((x * x).sum(axis=3), axis=2)


def test_aa_false_positive_rate_under_ten_looks_is_alpha() -> None:
    rng = np.random.default_rng(181)
    experiments, looks, per_look = 3000, 10, 60
    sums, sq = _simulate(rng, experiments, looks, per_look, 0.0)
    bounds = [b.bound for b in efficacy_bounds([(k + 1) / looks for k in range(looks)])]
    rejected = np.zeros(experiments, dtype=bool)
    for e in range(experiments):
        for k in range(looks):
            _, _, z = _welch_z(sums[e, :, k], sq[e, :, k], per_look * (k + 1))
            if abs(z) >= bounds[k]:
                rejected[e] = True
                break
    rate = rejected.mean()
    se = math.sqrt(ALPHA * (1 - ALPHA) / experiments)
    assert abs(rate - ALPHA) <= 3 * se, (rate, se)


def test_power_at_the_planned_sample_beats_the_asymptotic_confidence_sequence() -> None:
    rng = np.random.default_rng(182)
    experiments, looks = 1500, 10
    # exponential(2): sd 2; planned n per arm for 80 % power at an absolute effect of 0.25
    effect, sd = 0.25, 2.0
    planned = math.ceil(2 * sd**2 * (norm.ppf(0.975) + norm.ppf(0.8)) ** 2 / effect**2)
    per_look = math.ceil(planned / looks)
    sums, sq = _simulate(rng, experiments, looks, per_look, effect)
    bounds = [b.bound for b in efficacy_bounds([(k + 1) / looks for k in range(looks)])]
    gs = np.zeros(experiments, dtype=bool)
    cs = np.zeros(experiments, dtype=bool)
    for e in range(experiments):
        for k in range(looks):
            n = per_look * (k + 1)
            est, se, z = _welch_z(sums[e, :, k], sq[e, :, k], n)
            gs[e] |= abs(z) >= bounds[k]
            cs[e] |= confidence_sequence(est, se**2, 2 * n, alpha=ALPHA).p_value < ALPHA
    sim_se = math.sqrt(0.25 / experiments)
    # the design's analytic power (ten looks, O'Brien-Fleming) is within 3 SE of the simulation
    analytic = sum(
        crossing_probabilities(
            [(k + 1) / looks for k in range(looks)],
            bounds,
            drift=effect / (sd * math.sqrt(2 / (per_look * looks))),
        )
    )
    assert abs(gs.mean() - analytic) <= 3 * sim_se, (gs.mean(), analytic)
    assert analytic > 0.78
    assert gs.mean() - cs.mean() > 3 * sim_se, (gs.mean(), cs.mean())
