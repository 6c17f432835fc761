"""Power analysis: sample size, minimum detectable effect and planned duration.

All functions are two-sided and use the normal approximation. Effects are
*relative*: ``mde`` is the lift as a fraction of the baseline mean, so the
absolute effect is ``delta = mde * baseline_mean`` (``mde * baseline_rate`` for
binomial metrics).

Conventions for more than two arms and unequal splits
------------------------------------------------------
``weights`` lists the traffic share of every arm, **control first**
(``weights[0]`` is the control, the others are treatments); the shares are
normalised to sum to one. ``None`` means two arms with an equal split.

With ``N`` units in total, arm ``i`` receives ``w_i N`` units and the variance
of the treatment-minus-control difference for treatment ``t`` is
``(s_c^2 / w_c + s_t^2 / w_t) / N``. The required total ``N`` is the largest
one over the treatments, so that *every* treatment-vs-control comparison
reaches the power at the given (unadjusted) ``alpha``. The value returned as
"sample size per variant" is the number of units the *smallest* arm must reach,
``ceil(min_i(w_i) * N)``; every other arm then holds at least as many units as
its share requires. With two equal arms this is the textbook per-arm formula.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from scipy import optimize, special

__all__ = [
    "MetricType",
    "minimum_detectable_effect",
    "planned_duration_days",
    "progress",
    "sample_size_per_variant",
]

MetricType = Literal["binomial", "mean", "ratio"]

# Tolerance applied before rounding up, so that a value such as 1004.0000000000002
# produced by floating-point noise is not rounded to 1005.
_CEIL_RTOL = 1e-9


def _ndtri(q: float) -> float:
    return float(special.ndtri(q))


def _ceil(x: float) -> int:
    return math.ceil(x * (1.0 - _CEIL_RTOL))


def _check_prob(name: str, value: float) -> None:
    if not (0.0 < value < 1.0) or math.isnan(value):
        raise ValueError(f"{name} must be in the open interval (0, 1), got {value!r}")


def _normalise_weights(weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [0.5, 0.5]
    ws = [float(w) for w in weights]
    if len(ws) < 2:
        raise ValueError(f"weights must list at least two arms (control first), got {len(ws)}")
    if any(not (w > 0.0) or math.isinf(w) for w in ws):
        raise ValueError(f"every weight must be a finite number > 0, got {ws!r}")
    total = sum(ws)
    return [w / total for w in ws]


def _z_total(alpha: float, power: float) -> float:
    _check_prob("alpha", alpha)
    _check_prob("power", power)
    return _ndtri(1.0 - alpha / 2.0) + _ndtri(power)


def _baseline(
    metric_type: str,
    baseline_rate: float | None,
    baseline_mean: float | None,
    baseline_sd: float | None,
) -> tuple[float, float]:
    """Return ``(mean, sd)`` of the control arm, validated."""
    if metric_type == "binomial":
        if baseline_rate is None:
            raise ValueError("baseline_rate is required for a binomial metric")
        _check_prob("baseline_rate", baseline_rate)
        return baseline_rate, math.sqrt(baseline_rate * (1.0 - baseline_rate))
    # quantile: ``mean`` is the baseline quantile and ``sd`` the per-unit sd of its estimator
    # (n·Var(Q̂) → q(1 − q)/f(Q)²), so the mean formula applies
    if metric_type in ("mean", "ratio", "quantile"):
        if baseline_mean is None or baseline_sd is None:
            raise ValueError(
                f"baseline_mean and baseline_sd are required for a {metric_type} metric"
            )
        if not math.isfinite(baseline_mean) or baseline_mean == 0.0:
            raise ValueError(
                f"baseline_mean must be finite and non-zero (the effect is relative to it), "
                f"got {baseline_mean!r}"
            )
        if not (baseline_sd > 0.0) or not math.isfinite(baseline_sd):
            raise ValueError(f"baseline_sd must be a finite number > 0, got {baseline_sd!r}")
        return baseline_mean, baseline_sd
    raise ValueError(
        f"metric_type must be 'binomial', 'mean', 'ratio' or 'quantile', got {metric_type!r}"
    )


def _variance_factor(var_c: float, var_t: float, ws: list[float]) -> float:
    """Largest ``var_c / w_c + var_t / w_t`` over the treatments (``ws[0]`` = control)."""
    w_c = ws[0]
    return max(var_c / w_c + var_t / w_t for w_t in ws[1:])


def sample_size_per_variant(
    *,
    metric_type: MetricType,
    mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    baseline_rate: float | None = None,
    baseline_mean: float | None = None,
    baseline_sd: float | None = None,
    weights: Sequence[float] | None = None,
) -> int:
    r"""Units needed in the smallest arm for a two-sided test to reach ``power``.

    Parameters
    ----------
    metric_type : {"binomial", "mean", "ratio"}
        Kind of metric. A ratio metric uses ``baseline_mean`` and ``baseline_sd``
        of the ratio (its per-unit delta-method standard deviation).
    mde : float
        Minimum detectable *relative* effect, > 0 (0.1 = a 10 % lift).
    alpha : float, default 0.05
        Two-sided significance level, in (0, 1).
    power : float, default 0.8
        Probability of detecting the effect, in (0, 1).
    baseline_rate : float, optional
        Control conversion rate, in (0, 1); required for binomial metrics.
    baseline_mean, baseline_sd : float, optional
        Control mean (non-zero) and standard deviation (> 0); required for
        mean and ratio metrics.
    weights : sequence of float, optional
        Traffic share of every arm, control first. Default: two equal arms.

    Returns
    -------
    int
        Units per variant (the smallest arm's requirement), rounded up.

    Raises
    ------
    ValueError
        On an invalid ``alpha``, ``power``, ``mde``, baseline or weights.

    Notes
    -----
    With :math:`z = z_{1-\alpha/2} + z_{1-\beta}` and two equal arms:

    * binomial (unpooled normal approximation), :math:`p_2 = p_1(1 + \text{mde})`:
      :math:`n = z^2 \, (p_1(1-p_1) + p_2(1-p_2)) / (p_2 - p_1)^2`;
    * mean and ratio, :math:`\delta = \text{mde}\cdot\mu`:
      :math:`n = 2 \sigma^2 z^2 / \delta^2`.

    For general weights (module docstring) the total is
    :math:`N = z^2 \max_t (\sigma_c^2 / w_c + \sigma_t^2 / w_t) / \delta^2` and the
    result is :math:`\lceil \min_i w_i \, N \rceil`.

    References
    ----------
    .. [1] Chow, Shao & Wang, *Sample Size Calculations in Clinical Research*,
       2nd ed., 2008, sections 3.2 and 4.2.
    """
    if not (mde > 0.0) or not math.isfinite(mde):
        raise ValueError(f"mde must be a finite relative effect > 0, got {mde!r}")
    z = _z_total(alpha, power)
    ws = _normalise_weights(weights)
    mu, sd = _baseline(metric_type, baseline_rate, baseline_mean, baseline_sd)
    delta = mde * mu
    var_c = sd * sd
    if metric_type == "binomial":
        p2 = mu * (1.0 + mde)
        if p2 >= 1.0:
            raise ValueError(
                f"baseline_rate * (1 + mde) = {p2!r} must stay below 1 for a binomial metric"
            )
        var_t = p2 * (1.0 - p2)
    else:
        var_t = var_c
    total = z * z * _variance_factor(var_c, var_t, ws) / (delta * delta)
    return max(_ceil(min(ws) * total), 1)


def minimum_detectable_effect(
    *,
    metric_type: MetricType,
    sample_size_per_variant: int,
    alpha: float = 0.05,
    power: float = 0.8,
    baseline_rate: float | None = None,
    baseline_mean: float | None = None,
    baseline_sd: float | None = None,
    weights: Sequence[float] | None = None,
) -> float:
    r"""Smallest relative effect detectable with ``sample_size_per_variant`` units.

    The inverse of :func:`sample_size_per_variant` (without the rounding): same
    parameters, same conventions; ``sample_size_per_variant`` is the number of
    units in the smallest arm.

    Parameters
    ----------
    metric_type : {"binomial", "mean", "ratio"}
        Kind of metric.
    sample_size_per_variant : int
        Units in the smallest arm, >= 1.
    alpha, power : float
        Two-sided level and power, each in (0, 1).
    baseline_rate, baseline_mean, baseline_sd : float, optional
        As in :func:`sample_size_per_variant`.
    weights : sequence of float, optional
        Traffic share of every arm, control first. Default: two equal arms.

    Returns
    -------
    float
        The relative MDE (> 0). For a binomial metric, NaN when no treatment
        rate below 1 reaches the power with that many units.

    Raises
    ------
    ValueError
        On invalid inputs.

    Notes
    -----
    Mean and ratio: :math:`\text{mde} = z \sqrt{\sigma^2 \max_t(1/w_c + 1/w_t) / N} / |\mu|`
    with :math:`N = n / \min_i w_i`. Binomial: the root in :math:`m` of
    :math:`z^2 (p_1 q_1 / w_c + p_2 q_2 / w_t) / N = (p_1 m)^2`,
    :math:`p_2 = p_1 (1 + m)`, maximised over the treatments, found with Brent's method.
    """
    if isinstance(sample_size_per_variant, bool) or sample_size_per_variant < 1:
        raise ValueError(f"sample_size_per_variant must be >= 1, got {sample_size_per_variant!r}")
    z = _z_total(alpha, power)
    ws = _normalise_weights(weights)
    mu, sd = _baseline(metric_type, baseline_rate, baseline_mean, baseline_sd)
    total = sample_size_per_variant / min(ws)
    if metric_type != "binomial":
        return z * math.sqrt(sd * sd * _variance_factor(1.0, 1.0, ws) / total) / abs(mu)

    p1 = mu
    w_c = ws[0]
    w_t = min(ws[1:])  # the smallest treatment needs the largest effect

    def gap(m: float) -> float:
        p2 = p1 * (1.0 + m)
        return z * math.sqrt((p1 * (1 - p1) / w_c + p2 * (1 - p2) / w_t) / total) - p1 * m

    upper = 1.0 / p1 - 1.0  # p2 = 1
    if gap(upper) > 0.0:
        return math.nan
    root: float = optimize.brentq(gap, 0.0, upper, xtol=1e-14, rtol=1e-12)
    return root


def planned_duration_days(
    *,
    sample_size_per_variant: int,
    weights: Sequence[float],
    traffic_fraction: float,
    expected_daily_units: float,
    minimum_days: int = 7,
) -> int:
    r"""Days needed for every arm to reach ``sample_size_per_variant`` units.

    Parameters
    ----------
    sample_size_per_variant : int
        Units every arm must reach (the value of :func:`sample_size_per_variant`), >= 1.
    weights : sequence of float
        Traffic share of every arm (normalised to sum to 1).
    traffic_fraction : float
        Share of the eligible units that enter the experiment, in (0, 1].
    expected_daily_units : float
        Eligible units per day, > 0.
    minimum_days : int, default 7
        Floor on the duration (one weekly cycle), >= 1.

    Returns
    -------
    int
        :math:`\max(\text{minimum\_days}, \lceil N / (\text{daily} \cdot f) \rceil)`
        with :math:`N = \lceil n / \min_i w_i \rceil` the total units for the
        smallest arm to reach ``n``.

    Raises
    ------
    ValueError
        On invalid inputs.
    """
    if isinstance(sample_size_per_variant, bool) or sample_size_per_variant < 1:
        raise ValueError(f"sample_size_per_variant must be >= 1, got {sample_size_per_variant!r}")
    ws = _normalise_weights(weights)
    if not (0.0 < traffic_fraction <= 1.0):
        raise ValueError(f"traffic_fraction must be in (0, 1], got {traffic_fraction!r}")
    if not (expected_daily_units > 0.0) or not math.isfinite(expected_daily_units):
        raise ValueError(
            f"expected_daily_units must be a finite number > 0, got {expected_daily_units!r}"
        )
    if minimum_days < 1:
        raise ValueError(f"minimum_days must be >= 1, got {minimum_days!r}")
    total_units = _ceil(sample_size_per_variant / min(ws))
    days = _ceil(total_units / (expected_daily_units * traffic_fraction))
    return max(minimum_days, days)


def progress(*, units_per_variant: Sequence[int], sample_size_per_variant: int) -> float:
    """Fraction of the planned sample reached: the smallest arm over the requirement.

    Parameters
    ----------
    units_per_variant : sequence of int
        Units observed so far in every arm (each >= 0).
    sample_size_per_variant : int
        Units every arm must reach, >= 1.

    Returns
    -------
    float
        ``min(units) / sample_size_per_variant``; may exceed 1.

    Raises
    ------
    ValueError
        On an empty list, a negative count or a requirement < 1.
    """
    if sample_size_per_variant < 1:
        raise ValueError(f"sample_size_per_variant must be >= 1, got {sample_size_per_variant!r}")
    units = list(units_per_variant)
    if not units:
        raise ValueError("units_per_variant must list at least one arm")
    if any(u < 0 for u in units):
        raise ValueError(f"units must be >= 0, got {units!r}")
    return min(units) / sample_size_per_variant
