r"""Quantile metrics: arms' quantiles of per-unit values and their difference, no resampling.

Point estimate of the level-:math:`q` quantile of an arm's :math:`n` per-unit values: numpy's
default (linear interpolation, Hyndman & Fan type 7), :math:`x_{(\lfloor h\rfloor + 1)} +
(h - \lfloor h\rfloor)(x_{(\lfloor h\rfloor + 2)} - x_{(\lfloor h\rfloor + 1)})` with
:math:`h = q(n - 1)` — two order statistics.

Interval of one arm's quantile from two more order statistics: the number of values below the
true quantile is Binomial(n, q), so :math:`[x_{(l)}, x_{(u)}]` with :math:`l` the α/2 quantile of
Binomial(n, q) and :math:`u` one past its 1 − α/2 quantile covers it with probability about
1 − α (the distribution-free interval, e.g. Conover 1999 §3.2). Schultzberg & Ankargren (2022)
show that the Poisson bootstrap of a quantile converges to exactly this binomial law of the
selected order statistic, so the interval is the bootstrap interval without resampling; as they
(and GrowthBook's ``QuantileStatistic``) do, the standard error of the arm's quantile is read off
the interval, :math:`\hat\sigma = (x_{(u)} - x_{(l)}) / (2 z_{1-\alpha/2})`, and the two
independent arms are compared with a normal test:

* absolute :math:`\hat Q_t - \hat Q_c`, variance :math:`\hat\sigma_t^2 + \hat\sigma_c^2`;
* relative :math:`\hat Q_t / \hat Q_c - 1`, delta method
  :math:`\hat\sigma_t^2/\hat Q_c^2 + \hat Q_t^2 \hat\sigma_c^2 / \hat Q_c^4`.

The database returns only those order statistics (``service/analysis/aggregate.py``); the ranks
come from :func:`quantile_ranks`.

References
----------
.. [1] Schultzberg, M. & Ankargren, S. (2022). Resampling-free bootstrap inference for quantiles.
   arXiv:2202.10992.
.. [2] Conover, W. J. (1999). Practical Nonparametric Statistics, 3rd ed., §3.2.
.. [3] Hyndman, R. J. & Fan, Y. (1996). Sample quantiles in statistical packages. The American
   Statistician 50, 361-365 (definition 7).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special

from stats.frequentist import check_alpha, normal_estimate, relative_variance
from stats.results import Estimate

__all__ = ["QuantileRanks", "QuantileSummary", "compare_quantiles", "quantile_ranks"]

_NAN = math.nan


@dataclass(frozen=True, slots=True)
class QuantileRanks:
    """Which order statistics (1-based ranks) an arm of ``n`` units needs.

    ``point`` is :math:`\\lfloor h\\rfloor + 1` (the estimate also reads ``point + 1`` when it
    exists) with ``fraction`` :math:`h - \\lfloor h\\rfloor`; ``lower``/``upper`` the ranks of the
    interval's ends.
    """

    n: int
    point: int
    fraction: float
    lower: int
    upper: int


def quantile_ranks(n: int, q: float, *, alpha: float = 0.05) -> QuantileRanks:
    """Ranks of the order statistics for the level-``q`` quantile of ``n`` values.

    Parameters
    ----------
    n : int
        Units in the arm, >= 1.
    q : float
        Quantile level in (0, 1).
    alpha : float, default 0.05
        Two-sided level of the interval.

    Returns
    -------
    QuantileRanks
        ``lower`` = the α/2 quantile of Binomial(n, q), at least 1; ``upper`` = one past the
        1 − α/2 quantile, at most ``n``.
    """
    check_alpha(alpha)
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {q!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    # scipy.stats is imported here, not at start-up: it adds seconds to the server's start
    from scipy import stats

    h = q * (n - 1)
    base = math.floor(h)
    lower = int(stats.binom.ppf(alpha / 2.0, n, q))
    upper = int(stats.binom.ppf(1.0 - alpha / 2.0, n, q)) + 1
    return QuantileRanks(n, base + 1, h - base, min(max(lower, 1), n), min(max(upper, 1), n))


@dataclass(frozen=True, slots=True)
class QuantileSummary:
    """One arm of a quantile metric: its quantile and the two order statistics of its interval.

    Parameters
    ----------
    n : int
        Units in the arm (>= 0).
    quantile : float
        The level q in (0, 1).
    estimate : float
        The arm's quantile (type 7); NaN for an empty arm.
    lower, upper : float
        The order statistics :math:`x_{(l)}` and :math:`x_{(u)}` of :func:`quantile_ranks`.
    alpha : float, default 0.05
        The level the ranks were chosen for.
    """

    n: int
    quantile: float
    estimate: float
    lower: float
    upper: float
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)) or self.n < 0:
            raise ValueError(f"n must be an integer >= 0, got {self.n!r}")
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {self.quantile!r}")
        check_alpha(self.alpha)
        if self.n > 0 and not (self.lower <= self.estimate <= self.upper):
            raise ValueError("need lower <= estimate <= upper")

    @classmethod
    def from_array(
        cls, x: npt.ArrayLike | Sequence[float], q: float, *, alpha: float = 0.05
    ) -> QuantileSummary:
        """Summarise per-unit values ``x`` (numpy's quantile and the interval's order statistics).

        Parameters
        ----------
        x : array_like
            Per-unit values.
        q : float
            Quantile level in (0, 1).
        alpha : float, default 0.05

        Returns
        -------
        QuantileSummary
        """
        xa = np.sort(np.asarray(x, dtype=float).ravel())
        if xa.size == 0:
            return cls(0, q, _NAN, _NAN, _NAN, alpha)
        r = quantile_ranks(int(xa.size), q, alpha=alpha)
        return cls(
            int(xa.size),
            q,
            float(np.quantile(xa, q)),
            float(xa[r.lower - 1]),
            float(xa[r.upper - 1]),
            alpha,
        )

    @property
    def finite(self) -> bool:
        """Whether the order statistics are finite (always, for values stored within bounds)."""
        return self.n == 0 or all(math.isfinite(v) for v in (self.estimate, self.lower, self.upper))

    @property
    def mean(self) -> float:
        """The arm's value of the metric: its quantile."""
        return self.estimate

    @property
    def variance_of_estimate(self) -> float:
        r""":math:`\hat\sigma^2 = ((x_{(u)} - x_{(l)}) / (2 z_{1-\alpha/2}))^2`; NaN when n < 2."""
        if self.n < 2:
            return _NAN
        z = float(special.ndtri(1.0 - self.alpha / 2.0))
        return ((self.upper - self.lower) / (2.0 * z)) ** 2


def compare_quantiles(
    control: QuantileSummary, treatment: QuantileSummary, *, alpha: float = 0.05
) -> tuple[Estimate, Estimate]:
    """Absolute and relative difference of two arms' quantiles, normal test and interval.

    Parameters
    ----------
    control, treatment : QuantileSummary
        The two arms (same level).
    alpha : float, default 0.05
        Two-sided level of the comparison.

    Returns
    -------
    absolute, relative : Estimate
        See the module docstring. NaN inference when an arm has n < 2 or both intervals
        collapse (zero variance); the relative difference is NaN when the control's quantile
        is 0.
    """
    check_alpha(alpha)
    if not math.isclose(control.quantile, treatment.quantile):
        raise ValueError("the arms must be summaries of the same quantile level")
    q_c, q_t = control.estimate, treatment.estimate
    v_c, v_t = control.variance_of_estimate, treatment.variance_of_estimate
    absolute = normal_estimate(q_t - q_c, v_c + v_t, alpha=alpha)
    if q_c == 0.0 or math.isnan(q_c) or math.isnan(q_t):
        relative = Estimate(_NAN, _NAN, _NAN, _NAN)
    else:
        relative = normal_estimate(
            (q_t - q_c) / q_c, relative_variance(q_c, v_c, q_t, v_t), alpha=alpha
        )
    return absolute, relative
