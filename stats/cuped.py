"""CUPED variance reduction with a pre-period covariate (Deng et al. 2013), for means and ratios."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stats.frequentist import check_alpha, normal_estimate, relative_variance, welch_test
from stats.results import CupedResult
from stats.summaries import MeanSummary, RatioSummary

__all__ = ["CupedOutcome", "cuped_compare", "cuped_ratio_compare", "cuped_theta"]


def cuped_theta(control: MeanSummary, treatment: MeanSummary) -> float:
    r"""CUPED coefficient :math:`\theta = \mathrm{cov}(Y, X) / \mathrm{var}(X)` over both arms.

    Parameters
    ----------
    control, treatment : MeanSummary
        The two arms compared, each with covariate sums.

    Returns
    -------
    float
        :math:`\theta` from the ddof = 1 covariance and variance of the pooled
        sample (the two arms' sums added, as GrowthBook's ``compute_theta``);
        NaN when the covariate is missing, n < 2 or :math:`\mathrm{var}(X) = 0`.

    References
    ----------
    .. [1] Deng, Xu, Kohavi & Walker (2013). Improving the sensitivity of online
       controlled experiments by utilizing pre-experiment data. WSDM '13, eq. (3).
    """
    if not (control.has_covariate and treatment.has_covariate):
        return math.nan
    joint = control + treatment
    var_x = joint.pre_variance
    if not var_x > 0.0:
        return math.nan
    return joint.covariance / var_x


def _adjusted_moments(s: MeanSummary, theta: float) -> tuple[float, float]:
    """Mean and ddof = 1 variance of y − θ·x within one arm."""
    mean = s.mean - theta * s.pre_mean
    var = s.variance + theta * theta * s.pre_variance - 2.0 * theta * s.covariance
    return mean, max(var, 0.0)


@dataclass(frozen=True, slots=True)
class CupedOutcome:
    """CUPED result plus the adjusted moments the sequential and Bayesian layers reuse."""

    result: CupedResult
    var_mean_c: float  # variance of the adjusted control mean, s²/n
    var_mean_t: float


def cuped_compare(
    control: MeanSummary, treatment: MeanSummary, *, alpha: float = 0.05
) -> CupedOutcome | None:
    r"""CUPED-adjusted absolute and relative comparison.

    Parameters
    ----------
    control, treatment : MeanSummary
        The two arms, with covariate sums.
    alpha : float, default 0.05
        Two-sided level.

    Returns
    -------
    CupedOutcome or None
        ``None`` when CUPED cannot be applied (missing covariate, n < 2, or a
        covariate without variance): the caller falls back to the unadjusted
        result and reports a warning code. Otherwise:

        * absolute: Welch test on :math:`y - \theta x` per arm, i.e. estimate
          :math:`(\bar y_t - \theta \bar x_t) - (\bar y_c - \theta \bar x_c)` with
          adjusted variances :math:`s_y^2 + \theta^2 s_x^2 - 2\theta s_{xy}`;
        * relative: the adjusted difference over the *unadjusted* control mean,
          delta-method variance :math:`V_t/\bar y_c^2 + \bar y_t^2 V_c/\bar y_c^4`
          with the adjusted :math:`V = s_{adj}^2/n` (GrowthBook's convention);
        * ``variance_reduction`` :math:`= 1 - \mathrm{se}^2_{adj}/\mathrm{se}^2`.

    References
    ----------
    .. [1] Deng, Xu, Kohavi & Walker (2013), WSDM '13.
    """
    check_alpha(alpha)
    if control.n < 2 or treatment.n < 2:
        return None
    theta = cuped_theta(control, treatment)
    if math.isnan(theta):
        return None
    mean_c, var_c = _adjusted_moments(control, theta)
    mean_t, var_t = _adjusted_moments(treatment, theta)
    absolute = welch_test(mean_c, var_c, control.n, mean_t, var_t, treatment.n, alpha=alpha)
    vm_c, vm_t = var_c / control.n, var_t / treatment.n
    unadj_se2 = control.variance / control.n + treatment.variance / treatment.n
    reduction = 1.0 - (vm_c + vm_t) / unadj_se2 if unadj_se2 > 0.0 else math.nan
    y_c, y_t = control.mean, treatment.mean
    if y_c == 0.0:
        nan = math.nan
        relative = normal_estimate(nan, nan, alpha=alpha)
    else:
        relative = normal_estimate(
            (mean_t - mean_c) / y_c, relative_variance(y_c, vm_c, y_t, vm_t), alpha=alpha
        )
    return CupedOutcome(CupedResult(absolute, relative, theta, reduction), vm_c, vm_t)


def _ratio_influence(s: RatioSummary) -> tuple[float, float, float, float, float] | None:
    """Ratio, pre-period ratio and the ddof = 1 (co)variances of the linearised values.

    With :math:`R = \\bar m / \\bar d` and :math:`R_p = \\bar m_p / \\bar d_p`, the per-unit
    linearisations are :math:`Y = (m - R d)/\\bar d` and :math:`X = (m_p - R_p d_p)/\\bar d_p`;
    returns (R, R_p, var Y, var X, cov(Y, X)), or None when a denominator mean is 0 or n < 2.
    """
    if s.n < 2 or s.pre is None:
        return None
    mean, cov = s.moments()
    m, d, mp, dp = mean
    if d == 0.0 or dp == 0.0:
        return None
    r, rp = m / d, mp / dp
    gy = np.array([1.0, -r, 0.0, 0.0]) / d
    gx = np.array([0.0, 0.0, 1.0, -rp]) / dp
    return float(r), float(rp), float(gy @ cov @ gy), float(gx @ cov @ gx), float(gy @ cov @ gx)


def cuped_ratio_compare(
    control: RatioSummary, treatment: RatioSummary, *, alpha: float = 0.05
) -> CupedOutcome | None:
    r"""CUPED for a ratio metric: numerator and denominator adjusted by their pre-period values.

    Parameters
    ----------
    control, treatment : RatioSummary
        The two arms, each with its pre-period sums (``pre``).
    alpha : float, default 0.05
        Two-sided level.

    Returns
    -------
    CupedOutcome or None
        ``None`` when it cannot be applied (no covariate, n < 2, a zero denominator mean, or a
        pre-period ratio without variance). Otherwise, by the delta method (Deng et al. 2013,
        §3.3; Deng, Knoblich & Lu 2018): each arm's ratio :math:`R = \bar m/\bar d` is
        linearised per unit as :math:`Y = (m - R d)/\bar d` and its pre-period ratio
        :math:`R_p` as :math:`X = (m_p - R_p d_p)/\bar d_p` (the (co)variances come from the
        4 × 4 covariance of :math:`(m, d, m_p, d_p)` by the gradient, no unit-level data);
        :math:`\theta = \mathrm{cov}(Y, X)/\mathrm{var}(X)` pooled over both arms (the
        linearised values are centred within each arm, so pooling is the sum of the arms'
        co-moments); then

        * absolute: :math:`(R_t - \theta R_{p,t}) - (R_c - \theta R_{p,c})`, variance
          :math:`\sum_{arm} (s_Y^2 + \theta^2 s_X^2 - 2\theta s_{XY})/n`, normal interval;
        * relative: the adjusted difference over the unadjusted control ratio, variance
          :math:`V_t/R_c^2 + R_t^2 V_c/R_c^4` with the adjusted :math:`V` (as for means);
        * ``variance_reduction`` :math:`= 1 - V_{adj}/V_{unadj}`.

    References
    ----------
    .. [1] Deng, Xu, Kohavi & Walker (2013), WSDM '13, §3.3 (CUPED beyond means).
    .. [2] Deng, Knoblich & Lu (2018), KDD '18 (the delta method for ratio metrics).
    """
    check_alpha(alpha)
    c = _ratio_influence(control)
    t = _ratio_influence(treatment)
    if c is None or t is None:
        return None
    r_c, rp_c, vy_c, vx_c, cxy_c = c
    r_t, rp_t, vy_t, vx_t, cxy_t = t
    w_c, w_t = control.n - 1, treatment.n - 1
    var_x = (w_c * vx_c + w_t * vx_t) / (w_c + w_t)
    if not var_x > 0.0:
        return None
    theta = ((w_c * cxy_c + w_t * cxy_t) / (w_c + w_t)) / var_x
    vm_c = max(vy_c + theta * theta * vx_c - 2.0 * theta * cxy_c, 0.0) / control.n
    vm_t = max(vy_t + theta * theta * vx_t - 2.0 * theta * cxy_t, 0.0) / treatment.n
    diff = (r_t - theta * rp_t) - (r_c - theta * rp_c)
    absolute = normal_estimate(diff, vm_c + vm_t, alpha=alpha)
    unadj = vy_c / control.n + vy_t / treatment.n
    reduction = 1.0 - (vm_c + vm_t) / unadj if unadj > 0.0 else math.nan
    if r_c == 0.0:
        relative = normal_estimate(math.nan, math.nan, alpha=alpha)
    else:
        relative = normal_estimate(diff / r_c, relative_variance(r_c, vm_c, r_t, vm_t), alpha=alpha)
    return CupedOutcome(CupedResult(absolute, relative, theta, reduction), vm_c, vm_t)
