"""Quantile metrics: point estimates against numpy, interval coverage in simulation (heavy
tails, ties, zeros)."""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.stats import binom, norm

from stats.quantile import QuantileSummary, compare_quantiles, quantile_ranks

Gen = Callable[[np.random.Generator, int, float], np.ndarray]


def _lognormal(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    return scale * rng.lognormal(0.0, 1.0, n)


def _pareto(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    return scale * (rng.pareto(1.5, n) + 1.0)  # shape 1.5: infinite variance


def _zeros(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    return np.where(rng.random(n) < 0.3, 0.0, scale * rng.exponential(1.0, n))


def _ties(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    return np.round(scale * rng.lognormal(0.0, 1.0, n), 1)


TRUTH: dict[str, Callable[[float, float], float]] = {
    "lognormal": lambda q, s: s * math.exp(norm.ppf(q)),
    "pareto": lambda q, s: s * (1.0 - q) ** (-1.0 / 1.5),
    "zeros": lambda q, s: s * -math.log(1.0 - (q - 0.3) / 0.7),
    "ties": lambda q, s: round(s * math.exp(norm.ppf(q)), 1),
}
GENS: dict[str, Gen] = {"lognormal": _lognormal, "pareto": _pareto, "zeros": _zeros, "ties": _ties}


def test_point_estimate_and_interval_ends_are_numpy_and_the_binomial_order_statistics() -> None:
    rng = np.random.default_rng(3)
    x = _ties(rng, 997, 1.0)
    for q in (0.01, 0.25, 0.5, 0.9, 0.99):
        s = QuantileSummary.from_array(x, q)
        assert_allclose(s.estimate, np.quantile(x, q), rtol=1e-15)
        r = quantile_ranks(x.size, q)
        # P(#values below the quantile < lower) <= 2.5 %, P(>= upper) <= 2.5 %
        assert binom.cdf(r.lower - 1, x.size, q) <= 0.025 < binom.cdf(r.lower, x.size, q)
        assert binom.sf(r.upper - 1, x.size, q) <= 0.025
        xs = np.sort(x)
        assert (s.lower, s.upper) == (xs[r.lower - 1], xs[r.upper - 1])


@pytest.mark.parametrize(
    ("shape", "q"),
    [("lognormal", 0.5), ("lognormal", 0.9), ("pareto", 0.9), ("zeros", 0.5), ("ties", 0.75)],
)
def test_interval_of_the_difference_covers_at_the_nominal_rate(shape: str, q: float) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{shape}-{q}".encode()))
    reps, n, lift = 600, 600, 1.2
    truth = TRUTH[shape](q, lift) - TRUTH[shape](q, 1.0)
    covered = 0
    for _ in range(reps):
        c = QuantileSummary.from_array(GENS[shape](rng, n, 1.0), q)
        t = QuantileSummary.from_array(GENS[shape](rng, n, lift), q)
        absolute, _ = compare_quantiles(c, t)
        covered += absolute.ci_low <= truth <= absolute.ci_high
    rate = covered / reps
    se = math.sqrt(0.95 * 0.05 / reps)
    assert abs(rate - 0.95) <= 3 * se, (shape, q, rate, se)
