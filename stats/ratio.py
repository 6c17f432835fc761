"""Ratio metrics Σnum / Σden with the delta method (Deng et al. 2018)."""

from __future__ import annotations

import math

from stats.frequentist import check_alpha, normal_estimate, relative_variance
from stats.results import Estimate
from stats.summaries import RatioSummary

__all__ = ["compare_ratios", "ratio_variance"]

_NAN = math.nan


def ratio_variance(summary: RatioSummary) -> float:
    r"""Delta-method variance of one arm's ratio :math:`\hat R = \bar m / \bar d`.

    Parameters
    ----------
    summary : RatioSummary
        The arm's sufficient statistics.

    Returns
    -------
    float
        :math:`\frac{1}{n}\left(\frac{s_m^2}{\bar d^2} - \frac{2 \bar m\, s_{md}}{\bar d^3}
        + \frac{\bar m^2 s_d^2}{\bar d^4}\right)` with ddof = 1 (co)variances;
        NaN when n < 2 or :math:`\bar d = 0`.

    References
    ----------
    .. [1] Deng, Knoblich & Lu (2018). Applying the delta method in metric
       analytics: a practical guide with novel ideas. KDD '18, eq. (4).
    """
    n = summary.n
    if n < 2 or summary.sum_den == 0:
        return _NAN
    m = summary.sum_num / n
    d = summary.sum_den / n
    var = (
        summary.num_variance / d**2
        - 2.0 * m * summary.num_den_covariance / d**3
        + m * m * summary.den_variance / d**4
    ) / n
    return max(var, 0.0)


def compare_ratios(
    control: RatioSummary, treatment: RatioSummary, *, alpha: float = 0.05
) -> tuple[Estimate, Estimate]:
    r"""Absolute and relative comparison of two ratio metrics, normal test and CI.

    Parameters
    ----------
    control, treatment : RatioSummary
        The two arms.
    alpha : float, default 0.05
        Two-sided level.

    Returns
    -------
    absolute : Estimate
        :math:`\hat R_t - \hat R_c`, variance :math:`V_t + V_c` (see
        :func:`ratio_variance`), normal interval.
    relative : Estimate
        :math:`\hat R_t / \hat R_c - 1`, variance
        :math:`V_t/\hat R_c^2 + \hat R_t^2 V_c / \hat R_c^4`, normal interval.

    Notes
    -----
    Empty arms or a zero denominator give NaN estimates; n < 2 gives NaN
    inference.

    References
    ----------
    .. [1] Deng, Knoblich & Lu (2018), KDD '18.
    """
    check_alpha(alpha)
    r_c, r_t = control.ratio, treatment.ratio
    v_c, v_t = ratio_variance(control), ratio_variance(treatment)
    absolute = normal_estimate(r_t - r_c, v_t + v_c, alpha=alpha)
    if r_c == 0.0 or math.isnan(r_c) or math.isnan(r_t):
        relative = Estimate(_NAN, _NAN, _NAN, _NAN)
    else:
        relative = normal_estimate(
            (r_t - r_c) / r_c, relative_variance(r_c, v_c, r_t, v_t), alpha=alpha
        )
    return absolute, relative
