"""The interaction test against the interaction term of an OLS fit, and its false-alarm rate."""

from __future__ import annotations

import math

import numpy as np
import statsmodels.api as sm
from numpy.testing import assert_allclose

from stats.interaction import interaction_test
from stats.summaries import MeanSummary


def _cells(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, dict[str, MeanSummary]]:
    return {
        bv: {av: MeanSummary.from_array(y[(a == av) & (b == bv)]) for av in ("c", "t")}
        for bv in ("bc", "bt")
    }


def test_difference_of_effects_is_the_ols_interaction_term() -> None:
    rng = np.random.default_rng(4)
    n = 4000
    a = np.where(rng.random(n) < 0.5, "c", "t")
    b = np.where(rng.random(n) < 0.4, "bc", "bt")
    y = rng.exponential(2.0, n) + 0.3 * (a == "t") * (b == "bt")
    got = interaction_test(_cells(y, a, b), metric_type="mean", control="c", other_control="bc")
    x = np.column_stack([(a == "t"), (b == "bt"), (a == "t") & (b == "bt")]).astype(float)
    # saturated two-way model with HC2 errors: the cell means and their unequal variances
    fit = sm.OLS(y, sm.add_constant(x)).fit(cov_type="HC2")
    (test,) = got.tests
    assert_allclose(test.difference, fit.params[3], rtol=1e-10)
    assert_allclose(test.std_error, fit.bse[3], rtol=1e-10)
    assert_allclose(test.p_value, fit.pvalues[3], rtol=1e-8)
    assert got.found == (fit.pvalues[3] < 0.001)


def test_independent_experiments_raise_at_the_tests_level() -> None:
    rng = np.random.default_rng(5)
    reps, n, alpha = 2000, 800, 0.05
    alarms = 0
    for _ in range(reps):
        a = np.where(rng.random(n) < 0.5, "c", "t")
        b = np.where(rng.random(n) < 0.5, "bc", "bt")
        # both experiments have effects, but they add up: no interaction
        y = (rng.random(n) < 0.1 + 0.05 * (a == "t") + 0.08 * (b == "bt")).astype(float)
        res = interaction_test(
            _cells(y, a, b), metric_type="binomial", control="c", other_control="bc", alpha=alpha
        )
        alarms += res.found
    rate = alarms / reps
    se = math.sqrt(alpha * (1 - alpha) / reps)
    assert abs(rate - alpha) <= 3 * se, (rate, se)
