"""Sufficient statistics of one arm, as frozen dataclasses.

The engine never sees unit-level data: every method works from these sums.
``MeanSummary`` covers binomial and mean metrics (with an optional pre-period
covariate for CUPED); ``RatioSummary`` covers ratio metrics. Both validate on
construction (misuse raises ``ValueError``), add with ``+`` (disjoint sets of
units, e.g. two shards of the same arm) and can be built from arrays for tests.

A sum may be non-finite (``inf`` or NaN): that is a data condition, not misuse —
values near the limit of double precision (a value of 1.5e154 has a square
above 1.8e308) overflow the sums of squares. Such a summary is accepted,
``finite`` is false, and :func:`stats.analyze` answers its comparisons with NaN
estimates and the warning ``non_finite_statistics``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["MeanSummary", "RatioSummary", "Summary"]

ArrayLike = npt.ArrayLike | Sequence[float]


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"n must be an integer, got {n!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")


def _check_number(**values: float | None) -> None:
    """Sums are real numbers (``inf`` and NaN included: overflow is a data condition)."""
    for name, value in values.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float, np.floating))
        ):
            raise ValueError(f"{name} must be a number, got {value!r}")


def _all_finite(*values: float | None) -> bool:
    return all(v is None or math.isfinite(v) for v in values)


def _sample_variance(n: int, total: float, total_sq: float) -> float:
    """ddof = 1 variance from sums; NaN when n < 2, clamped at 0 against rounding."""
    if n < 2:
        return math.nan
    return max((total_sq - total * total / n) / (n - 1), 0.0)


def _sample_covariance(n: int, sum_a: float, sum_b: float, sum_ab: float) -> float:
    """ddof = 1 covariance from sums; NaN when n < 2."""
    if n < 2:
        return math.nan
    return (sum_ab - sum_a * sum_b / n) / (n - 1)


@dataclass(frozen=True, slots=True)
class MeanSummary:
    """Sufficient statistics of a binomial or mean metric in one arm.

    Parameters
    ----------
    n : int
        Units in the arm (>= 0).
    sum_x : float
        Σx over units (conversions for a binomial metric).
    sum_x2 : float
        Σx² (equal to ``sum_x`` for a 0/1 metric).
    sum_pre, sum_pre2, sum_x_pre : float, optional
        Σpre, Σpre² and Σx·pre of the pre-period covariate, for CUPED. Give all
        three or none.

    Raises
    ------
    ValueError
        On a negative or non-integer ``n``, a sum that is not a number, a
        negative sum of squares, a partial covariate, or non-zero sums with
        ``n = 0``. Non-finite sums (overflow) are accepted: see ``finite``.
    """

    n: int
    sum_x: float
    sum_x2: float
    sum_pre: float | None = None
    sum_pre2: float | None = None
    sum_x_pre: float | None = None

    def __post_init__(self) -> None:
        _check_n(self.n)
        _check_number(
            sum_x=self.sum_x,
            sum_x2=self.sum_x2,
            sum_pre=self.sum_pre,
            sum_pre2=self.sum_pre2,
            sum_x_pre=self.sum_x_pre,
        )
        cov = (self.sum_pre, self.sum_pre2, self.sum_x_pre)
        if any(v is None for v in cov) and not all(v is None for v in cov):
            raise ValueError("give all of sum_pre, sum_pre2 and sum_x_pre, or none of them")
        if self.sum_x2 < 0 or (self.sum_pre2 is not None and self.sum_pre2 < 0):
            raise ValueError("sums of squares must be >= 0")
        if self.n == 0 and any(v not in (None, 0, 0.0) for v in (self.sum_x, self.sum_x2, *cov)):
            raise ValueError("an arm with n = 0 must have zero sums")

    @classmethod
    def from_array(cls, x: ArrayLike, pre: ArrayLike | None = None) -> MeanSummary:
        """Summarise per-unit values ``x`` (and the covariate ``pre``, same length).

        Parameters
        ----------
        x : array_like
            Per-unit metric values.
        pre : array_like, optional
            Per-unit pre-period values of the same metric, for CUPED.

        Returns
        -------
        MeanSummary
        """
        xa = np.asarray(x, dtype=float).ravel()
        if pre is None:
            return cls(int(xa.size), float(xa.sum()), float(xa @ xa))
        pa = np.asarray(pre, dtype=float).ravel()
        if pa.shape != xa.shape:
            raise ValueError("x and pre must have the same length")
        return cls(
            int(xa.size),
            float(xa.sum()),
            float(xa @ xa),
            float(pa.sum()),
            float(pa @ pa),
            float(xa @ pa),
        )

    @classmethod
    def from_binomial(cls, n: int, conversions: int) -> MeanSummary:
        """Summary of a 0/1 metric: ``conversions`` units out of ``n`` converted.

        Parameters
        ----------
        n : int
            Units in the arm.
        conversions : int
            Units with at least one event, ``0 <= conversions <= n``.

        Returns
        -------
        MeanSummary
        """
        _check_n(n)
        if not 0 <= conversions <= n:
            raise ValueError(f"conversions must be in [0, n], got {conversions!r} for n={n!r}")
        return cls(n, float(conversions), float(conversions))

    def __add__(self, other: MeanSummary) -> MeanSummary:
        if not isinstance(other, MeanSummary):
            return NotImplemented
        has_cov = self.has_covariate and other.has_covariate

        def add(a: float | None, b: float | None) -> float | None:
            return (a or 0.0) + (b or 0.0) if has_cov else None

        return MeanSummary(
            self.n + other.n,
            self.sum_x + other.sum_x,
            self.sum_x2 + other.sum_x2,
            add(self.sum_pre, other.sum_pre),
            add(self.sum_pre2, other.sum_pre2),
            add(self.sum_x_pre, other.sum_x_pre),
        )

    @property
    def finite(self) -> bool:
        """Whether every sum is finite (false after an overflow: no statistic can be made)."""
        return _all_finite(self.sum_x, self.sum_x2, self.sum_pre, self.sum_pre2, self.sum_x_pre)

    @property
    def has_covariate(self) -> bool:
        """Whether the CUPED covariate sums are present."""
        return self.sum_pre is not None

    @property
    def mean(self) -> float:
        """Σx / n; NaN for an empty arm."""
        return self.sum_x / self.n if self.n > 0 else math.nan

    @property
    def variance(self) -> float:
        """Sample variance of x (ddof = 1); NaN when n < 2."""
        return _sample_variance(self.n, self.sum_x, self.sum_x2)

    @property
    def pre_mean(self) -> float:
        """Mean of the covariate; NaN without covariate or units."""
        if self.sum_pre is None or self.n == 0:
            return math.nan
        return self.sum_pre / self.n

    @property
    def pre_variance(self) -> float:
        """Sample variance of the covariate (ddof = 1); NaN when unavailable."""
        if self.sum_pre is None or self.sum_pre2 is None:
            return math.nan
        return _sample_variance(self.n, self.sum_pre, self.sum_pre2)

    @property
    def covariance(self) -> float:
        """Sample covariance of x and the covariate (ddof = 1); NaN when unavailable."""
        if self.sum_pre is None or self.sum_x_pre is None:
            return math.nan
        return _sample_covariance(self.n, self.sum_x, self.sum_pre, self.sum_x_pre)


@dataclass(frozen=True, slots=True)
class RatioSummary:
    """Sufficient statistics of a ratio metric Σnum / Σden in one arm.

    Parameters
    ----------
    n : int
        Units in the arm (>= 0).
    sum_num, sum_den : float
        Σ of the per-unit numerator and denominator values.
    sum_num2, sum_den2 : float
        Σ of their squares.
    sum_num_den : float
        Σ num·den.

    Raises
    ------
    ValueError
        On a negative ``n``, sums that are not numbers or are inconsistent.
        Non-finite sums (overflow) are accepted: see ``finite``.
    """

    n: int
    sum_num: float
    sum_den: float
    sum_num2: float
    sum_den2: float
    sum_num_den: float

    def __post_init__(self) -> None:
        _check_n(self.n)
        _check_number(
            sum_num=self.sum_num,
            sum_den=self.sum_den,
            sum_num2=self.sum_num2,
            sum_den2=self.sum_den2,
            sum_num_den=self.sum_num_den,
        )
        if self.sum_num2 < 0 or self.sum_den2 < 0:
            raise ValueError("sums of squares must be >= 0")
        sums = (self.sum_num, self.sum_den, self.sum_num2, self.sum_den2, self.sum_num_den)
        if self.n == 0 and any(v != 0 for v in sums):
            raise ValueError("an arm with n = 0 must have zero sums")

    @classmethod
    def from_arrays(cls, num: ArrayLike, den: ArrayLike) -> RatioSummary:
        """Summarise per-unit numerator and denominator values.

        Parameters
        ----------
        num, den : array_like
            Per-unit values, same length.

        Returns
        -------
        RatioSummary
        """
        a = np.asarray(num, dtype=float).ravel()
        b = np.asarray(den, dtype=float).ravel()
        if a.shape != b.shape:
            raise ValueError("num and den must have the same length")
        return cls(
            int(a.size), float(a.sum()), float(b.sum()), float(a @ a), float(b @ b), float(a @ b)
        )

    def __add__(self, other: RatioSummary) -> RatioSummary:
        if not isinstance(other, RatioSummary):
            return NotImplemented
        return RatioSummary(
            self.n + other.n,
            self.sum_num + other.sum_num,
            self.sum_den + other.sum_den,
            self.sum_num2 + other.sum_num2,
            self.sum_den2 + other.sum_den2,
            self.sum_num_den + other.sum_num_den,
        )

    @property
    def finite(self) -> bool:
        """Whether every sum is finite (false after an overflow: no statistic can be made)."""
        return _all_finite(
            self.sum_num, self.sum_den, self.sum_num2, self.sum_den2, self.sum_num_den
        )

    @property
    def ratio(self) -> float:
        """Σnum / Σden; NaN when the arm is empty or Σden = 0."""
        if self.n == 0 or self.sum_den == 0:
            return math.nan
        return self.sum_num / self.sum_den

    @property
    def mean(self) -> float:
        """The arm's value of the metric, the ratio Σnum / Σden."""
        return self.ratio

    @property
    def num_variance(self) -> float:
        """Sample variance of the per-unit numerator (ddof = 1)."""
        return _sample_variance(self.n, self.sum_num, self.sum_num2)

    @property
    def den_variance(self) -> float:
        """Sample variance of the per-unit denominator (ddof = 1)."""
        return _sample_variance(self.n, self.sum_den, self.sum_den2)

    @property
    def num_den_covariance(self) -> float:
        """Sample covariance of numerator and denominator (ddof = 1)."""
        return _sample_covariance(self.n, self.sum_num, self.sum_den, self.sum_num_den)


Summary = MeanSummary | RatioSummary
