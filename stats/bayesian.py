"""Gaussian Bayesian model of the relative lift."""

from __future__ import annotations

import math

from scipy import special

from stats.frequentist import check_alpha
from stats.results import BayesianResult

__all__ = ["gaussian_posterior"]

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _positive_part_mean(m: float, s: float) -> float:
    """E[max(0, Y)] for Y ~ N(m, s²): m Φ(m/s) + s φ(m/s)."""
    z = m / s
    return m * float(special.ndtr(z)) + s * _INV_SQRT_2PI * math.exp(-0.5 * z * z)


def gaussian_posterior(
    lift: float,
    variance: float,
    *,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    prior_mean: float | None = None,
    prior_sd: float | None = None,
) -> BayesianResult:
    r"""Posterior of the relative lift under a Gaussian likelihood and prior.

    Parameters
    ----------
    lift : float
        Estimated relative lift :math:`\hat\ell`.
    variance : float
        Its (delta-method) variance :math:`v`, the likelihood
        :math:`\hat\ell \mid \ell \sim N(\ell, v)`.
    higher_is_better : bool, default True
        Direction of improvement.
    alpha : float, default 0.05
        The credible interval is the equal-tailed :math:`1 - \alpha` one.
    prior_mean, prior_sd : float, optional
        Normal prior :math:`N(m_0, s_0^2)` on the lift; both ``None`` (the
        default) means a flat prior. ``prior_sd`` must be > 0.

    Returns
    -------
    BayesianResult
        Posterior :math:`N(\mu, \sigma^2)` with precision
        :math:`1/\sigma^2 = 1/v + 1/s_0^2` and
        :math:`\mu = \sigma^2(\hat\ell/v + m_0/s_0^2)` (flat prior: :math:`\mu =
        \hat\ell`, :math:`\sigma^2 = v`); ``chance_to_win`` :math:`=\Phi(\mu/\sigma)`
        (:math:`\Phi(-\mu/\sigma)` when lower is better); ``expected_loss`` of
        shipping :math:`E[\max(0, -\ell)] = \sigma\varphi(\mu/\sigma) - \mu\Phi(-\mu/\sigma)`
        and of keeping the control :math:`E[\max(0, \ell)]` (mirrored when lower is
        better); interval :math:`\mu \pm z_{1-\alpha/2}\sigma`. All NaN when
        :math:`v` is not positive.

    Raises
    ------
    ValueError
        On α outside (0, 1), only one of the prior parameters, or ``prior_sd <= 0``.

    References
    ----------
    .. [1] Gelman et al., *Bayesian Data Analysis*, 3rd ed., section 2.5 (normal
       likelihood with known variance, conjugate normal prior).
    .. [2] Stucchio (2015). Bayesian A/B testing at VWO (expected loss).
    """
    check_alpha(alpha)
    if (prior_mean is None) != (prior_sd is None):
        raise ValueError("give both prior_mean and prior_sd, or neither (flat prior)")
    if prior_sd is not None and (not (prior_sd > 0.0) or not math.isfinite(prior_sd)):
        raise ValueError(f"prior_sd must be a finite number > 0, got {prior_sd!r}")
    if not (variance > 0.0) or not math.isfinite(variance) or not math.isfinite(lift):
        nan = math.nan
        return BayesianResult(nan, nan, nan, nan, nan, nan, nan)
    if prior_mean is None or prior_sd is None:
        mu, var = lift, variance
    else:
        precision = 1.0 / variance + 1.0 / (prior_sd * prior_sd)
        var = 1.0 / precision
        mu = var * (lift / variance + prior_mean / (prior_sd * prior_sd))
    sd = math.sqrt(var)
    sign = 1.0 if higher_is_better else -1.0
    gain = sign * mu  # posterior mean of the improvement
    chance = float(special.ndtr(gain / sd))
    loss_ship = _positive_part_mean(-gain, sd)
    loss_control = _positive_part_mean(gain, sd)
    z = float(special.ndtri(1.0 - alpha / 2.0))
    return BayesianResult(chance, loss_ship, loss_control, mu - z * sd, mu + z * sd, mu, sd)
