"""Asymptotic confidence sequences and always-valid p-values.

Follows Waudby-Smith, Arnold, Wu, Howard & Ramdas (2023), "Time-uniform central
limit theory and asymptotic confidence sequences", arXiv:2103.06476v7, as
GrowthBook's ``gbstats`` implements them for A/B tests: the estimator's variance
``V`` is turned into a per-observation variance ``s² = V·N`` with ``N`` the total
units of both arms, and the two-sided Gaussian-mixture boundary is applied.
"""

from __future__ import annotations

import math

from stats.frequentist import check_alpha
from stats.results import Estimate

__all__ = ["DEFAULT_N_STAR", "always_valid_p_value", "confidence_sequence", "sequential_rho"]

DEFAULT_N_STAR = 5000.0


def _check_n_star(n_star: float) -> None:
    if not (n_star > 0.0) or not math.isfinite(n_star):
        raise ValueError(f"n_star must be a finite number > 0, got {n_star!r}")


def sequential_rho(alpha: float, n_star: float) -> float:
    r"""Mixing parameter :math:`\rho` that makes the boundary tightest at ``n_star`` units.

    Parameters
    ----------
    alpha : float
        Two-sided level, in (0, 1).
    n_star : float
        Tuning parameter: total units where the sequence is narrowest, > 0.

    Returns
    -------
    float
        :math:`\rho = \sqrt{\left(-2\ln\alpha + \ln(1 - 2\ln\alpha)\right)/N^*}`.

    References
    ----------
    .. [1] Waudby-Smith et al. (2023), arXiv:2103.06476v7, eq. (161).
    """
    check_alpha(alpha)
    _check_n_star(n_star)
    log_a = math.log(alpha)
    return math.sqrt((-2.0 * log_a + math.log(1.0 - 2.0 * log_a)) / n_star)


def always_valid_p_value(estimate: float, variance: float, n_total: float, rho: float) -> float:
    r"""Always-valid p-value of ``estimate`` against 0.

    Parameters
    ----------
    estimate : float
        Point estimate.
    variance : float
        Its variance :math:`V`.
    n_total : float
        Total units of both arms :math:`N`.
    rho : float
        Mixing parameter from :func:`sequential_rho`.

    Returns
    -------
    float
        :math:`\min\left(1, \sqrt{N\rho^2 + 1}\,
        \exp\left(-\frac{\rho^2 N \hat\theta^2 / V}{2(N\rho^2 + 1)}\right)\right)`,
        the inverse of the mixture e-value; NaN when undefined.

    References
    ----------
    .. [1] Waudby-Smith et al. (2023), arXiv:2103.06476v7, eq. (155).
    """
    if not (variance > 0.0) or not math.isfinite(estimate) or n_total < 1:
        return math.nan
    r2 = rho * rho
    tr2p1 = n_total * r2 + 1.0
    st2 = estimate * estimate * n_total / variance
    log_p = 0.5 * math.log(tr2p1) - r2 * st2 / (2.0 * tr2p1)
    return math.exp(min(log_p, 0.0))


def confidence_sequence(
    estimate: float,
    variance: float,
    n_total: float,
    *,
    alpha: float = 0.05,
    n_star: float = DEFAULT_N_STAR,
) -> Estimate:
    r"""Two-sided asymptotic confidence sequence and always-valid p-value.

    Parameters
    ----------
    estimate : float
        Point estimate (absolute or relative difference).
    variance : float
        Its estimated variance :math:`V` (e.g. Welch :math:`s_t^2/n_t + s_c^2/n_c`).
    n_total : float
        Units of both arms, :math:`N = n_c + n_t`.
    alpha : float, default 0.05
        Two-sided level: the sequence covers the truth at *all* looks with
        probability at least :math:`1 - \alpha`.
    n_star : float, default 5000
        Tuning parameter, see :func:`sequential_rho`.

    Returns
    -------
    Estimate
        ``estimate`` ± halfwidth with :math:`s^2 = V N` and
        :math:`\text{halfwidth} = \sqrt{s^2}\sqrt{\frac{2(N\rho^2 + 1)}{N^2\rho^2}
        \ln\frac{\sqrt{N\rho^2 + 1}}{\alpha}}`, ``p_value`` from
        :func:`always_valid_p_value`. NaN inference when :math:`V` is not positive.

    References
    ----------
    .. [1] Waudby-Smith et al. (2023), arXiv:2103.06476v7, eq. (9).
    .. [2] GrowthBook gbstats, ``SequentialTwoSidedTTest``.
    """
    rho = sequential_rho(alpha, n_star)
    if not (variance > 0.0) or not math.isfinite(variance) or not math.isfinite(estimate):
        nan = math.nan
        return Estimate(estimate, nan, nan, nan)
    r2 = rho * rho
    tr2p1 = n_total * r2 + 1.0
    width2 = 2.0 * tr2p1 * math.log(math.sqrt(tr2p1) / alpha) / (n_total * n_total * r2)
    halfwidth = math.sqrt(variance * n_total) * math.sqrt(width2)
    p = always_valid_p_value(estimate, variance, n_total, rho)
    return Estimate(estimate, estimate - halfwidth, estimate + halfwidth, p, math.sqrt(variance))
