"""Fixed-horizon frequentist comparisons of two arms from their moments.

All functions take the control's and the treatment's mean, ddof = 1 variance and
unit count and return an :class:`~stats.results.Estimate`. Data conditions
(n < 2, zero standard error, zero control mean) give NaN fields, never an
exception; misuse (α outside (0, 1)) raises ``ValueError``.
"""

from __future__ import annotations

import math

from scipy import special

from stats.results import Estimate

__all__ = [
    "check_alpha",
    "normal_estimate",
    "relative_lift",
    "relative_variance",
    "welch_df",
    "welch_test",
]

_NAN = math.nan


def check_alpha(alpha: float) -> None:
    """Raise ``ValueError`` unless ``0 < alpha < 1``.

    Parameters
    ----------
    alpha : float
        Significance level.
    """
    if not (0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be in the open interval (0, 1), got {alpha!r}")


def welch_df(var_c: float, n_c: float, var_t: float, n_t: float) -> float:
    r"""Welch–Satterthwaite degrees of freedom.

    Parameters
    ----------
    var_c, var_t : float
        ddof = 1 variances of the two arms.
    n_c, n_t : float
        Unit counts (each >= 2).

    Returns
    -------
    float
        :math:`\nu = (s_c^2/n_c + s_t^2/n_t)^2 / \left(\frac{(s_c^2/n_c)^2}{n_c - 1}
        + \frac{(s_t^2/n_t)^2}{n_t - 1}\right)`; NaN when undefined.

    References
    ----------
    .. [1] Welch, B. L. (1947). The generalization of Student's problem when several
       different population variances are involved. Biometrika 34, 28-35.
    """
    if n_c < 2 or n_t < 2:
        return _NAN
    a = var_c / n_c
    b = var_t / n_t
    den = a * a / (n_c - 1) + b * b / (n_t - 1)
    if not den > 0.0:
        return _NAN
    return (a + b) ** 2 / den


def welch_test(
    mean_c: float,
    var_c: float,
    n_c: float,
    mean_t: float,
    var_t: float,
    n_t: float,
    *,
    alpha: float = 0.05,
) -> Estimate:
    r"""Welch's two-sample t-test of the absolute difference ``mean_t − mean_c``.

    Parameters
    ----------
    mean_c, var_c, n_c : float
        Control mean, ddof = 1 variance and unit count.
    mean_t, var_t, n_t : float
        Treatment mean, ddof = 1 variance and unit count.
    alpha : float, default 0.05
        Two-sided level of the confidence interval.

    Returns
    -------
    Estimate
        ``estimate`` :math:`\hat\Delta = \bar y_t - \bar y_c`, ``std_error``
        :math:`s = \sqrt{s_t^2/n_t + s_c^2/n_c}`, ``df`` the Welch–Satterthwaite
        :math:`\nu`, ``ci`` :math:`\hat\Delta \pm t_{1-\alpha/2,\nu}\, s`, and
        ``p_value`` :math:`2\,F_{t,\nu}(-|\hat\Delta|/s)`. Inference fields are
        NaN when an arm has fewer than 2 units or :math:`s = 0`; the estimate is
        NaN when an arm is empty.

    Notes
    -----
    Binomial metrics use the same test with the ddof = 1 variance
    :math:`\hat p(1-\hat p)\,n/(n-1)`. Identical to
    ``scipy.stats.ttest_ind_from_stats(..., equal_var=False)`` and R's
    ``t.test(x, y)``.

    References
    ----------
    .. [1] Welch, B. L. (1947). Biometrika 34, 28-35.
    """
    check_alpha(alpha)
    estimate = mean_t - mean_c
    if n_c < 2 or n_t < 2:
        return Estimate(estimate, _NAN, _NAN, _NAN)
    se2 = var_t / n_t + var_c / n_c
    if not se2 > 0.0:
        return Estimate(estimate, _NAN, _NAN, _NAN, 0.0)
    se = math.sqrt(se2)
    df = welch_df(var_c, n_c, var_t, n_t)
    q = float(special.stdtrit(df, 1.0 - alpha / 2.0))
    p = 2.0 * float(special.stdtr(df, -abs(estimate) / se))
    return Estimate(estimate, estimate - q * se, estimate + q * se, min(p, 1.0), se, df)


def normal_estimate(estimate: float, variance: float, *, alpha: float = 0.05) -> Estimate:
    r"""Two-sided normal (z) interval and p-value of ``estimate`` against 0.

    Parameters
    ----------
    estimate : float
        Point estimate.
    variance : float
        Its estimated variance.
    alpha : float, default 0.05
        Two-sided level.

    Returns
    -------
    Estimate
        :math:`\hat\theta \pm z_{1-\alpha/2}\sqrt{v}`, p-value
        :math:`2\Phi(-|\hat\theta|/\sqrt{v})`; NaN inference when ``variance``
        is not positive and finite.
    """
    check_alpha(alpha)
    if not (variance > 0.0) or not math.isfinite(variance) or not math.isfinite(estimate):
        se = 0.0 if variance == 0.0 else _NAN
        return Estimate(estimate, _NAN, _NAN, _NAN, se)
    se = math.sqrt(variance)
    z = float(special.ndtri(1.0 - alpha / 2.0))
    p = 2.0 * float(special.ndtr(-abs(estimate) / se))
    return Estimate(estimate, estimate - z * se, estimate + z * se, min(p, 1.0), se)


def relative_variance(mean_c: float, var_mean_c: float, mean_t: float, var_mean_t: float) -> float:
    r"""First-order delta-method variance of :math:`\bar y_t / \bar y_c - 1`, arms independent.

    Parameters
    ----------
    mean_c, mean_t : float
        Control and treatment means (control non-zero).
    var_mean_c, var_mean_t : float
        Variances *of the means* (e.g. :math:`s^2/n`).

    Returns
    -------
    float
        :math:`\frac{V_t}{\bar y_c^2} + \frac{\bar y_t^2 V_c}{\bar y_c^4}`.

    References
    ----------
    .. [1] Deng, Knoblich & Lu (2018). Applying the delta method in metric
       analytics: a practical guide with novel ideas. KDD '18, section 3.
    """
    mc2 = mean_c * mean_c
    return var_mean_t / mc2 + mean_t * mean_t * var_mean_c / (mc2 * mc2)


def relative_lift(
    mean_c: float,
    var_c: float,
    n_c: float,
    mean_t: float,
    var_t: float,
    n_t: float,
    *,
    alpha: float = 0.05,
) -> Estimate:
    r"""Relative lift :math:`\bar y_t/\bar y_c - 1` with a delta-method normal interval.

    Parameters
    ----------
    mean_c, var_c, n_c : float
        Control mean, ddof = 1 variance and unit count.
    mean_t, var_t, n_t : float
        Treatment mean, ddof = 1 variance and unit count.
    alpha : float, default 0.05
        Two-sided level.
    Returns
    -------
    Estimate
        Normal interval :math:`\hat r \pm z_{1-\alpha/2}\,\mathrm{se}` with
        :math:`\mathrm{se}^2` from :func:`relative_variance` with
        :math:`V = s^2/n`. NaN when the control mean is 0 or an arm has fewer
        than 2 units.

    References
    ----------
    .. [1] Deng, Knoblich & Lu (2018), KDD '18.
    """
    check_alpha(alpha)
    if n_c < 1 or n_t < 1 or not mean_c or not math.isfinite(mean_c):
        return Estimate(_NAN, _NAN, _NAN, _NAN)
    estimate = (mean_t - mean_c) / mean_c
    if n_c < 2 or n_t < 2:
        return Estimate(estimate, _NAN, _NAN, _NAN)
    variance = relative_variance(mean_c, var_c / n_c, mean_t, var_t / n_t)
    return normal_estimate(estimate, variance, alpha=alpha)
