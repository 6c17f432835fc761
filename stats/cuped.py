"""CUPED variance reduction with a pre-period covariate (Deng et al. 2013)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from stats.frequentist import check_alpha, normal_estimate, relative_variance, welch_test
from stats.results import CupedResult
from stats.summaries import MeanSummary

__all__ = ["CupedOutcome", "cuped_compare", "cuped_theta"]


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
