"""Guardrail metrics: one-sided non-inferiority test of the relative lift."""

from __future__ import annotations

import math

from scipy import special

from stats.frequentist import check_alpha
from stats.results import GuardrailResult, GuardrailStatus

__all__ = ["non_inferiority"]


def non_inferiority(
    lift: float,
    std_error: float,
    *,
    margin: float,
    higher_is_better: bool = True,
    alpha: float = 0.05,
) -> GuardrailResult:
    r"""Non-inferiority verdict of a relative lift against a tolerated harm ``margin``.

    Parameters
    ----------
    lift : float
        Estimated relative lift :math:`\hat\ell` of the treatment.
    std_error : float
        Its standard error (delta method).
    margin : float
        Largest tolerated *relative* harm, > 0 (0.02 = 2 %).
    higher_is_better : bool, default True
        For a lower-is-better metric (latency, errors) an increase is harm.
    alpha : float, default 0.05
        One-sided level of each test.

    Returns
    -------
    GuardrailResult
        With the harm :math:`h = -\hat\ell` (higher is better) or :math:`h = \hat\ell`:

        * ``pass`` when H0: :math:`h \ge` margin is rejected,
          :math:`p = \Phi((h - \text{margin})/\mathrm{se}) < \alpha` (harm beyond
          the margin ruled out: the upper :math:`1-\alpha` bound of :math:`h` is below it);
        * ``fail`` when H0: :math:`h \le` margin is rejected,
          :math:`p_{fail} = \Phi((\text{margin} - h)/\mathrm{se}) < \alpha`
          (significant harm beyond the margin);
        * ``inconclusive`` otherwise, including when the standard error is not
          available.

    Raises
    ------
    ValueError
        On ``margin <= 0`` or α outside (0, 1).

    References
    ----------
    .. [1] Wellek, S. (2010). *Testing Statistical Hypotheses of Equivalence and
       Noninferiority*, 2nd ed., chapter 2.
    """
    check_alpha(alpha)
    if not (margin > 0.0) or not math.isfinite(margin):
        raise ValueError(f"margin must be a finite relative harm > 0, got {margin!r}")
    harm = -lift if higher_is_better else lift
    if not (std_error > 0.0) or not math.isfinite(std_error) or not math.isfinite(harm):
        return GuardrailResult("inconclusive", margin, harm, math.nan, math.nan)
    z = (harm - margin) / std_error
    p_pass = float(special.ndtr(z))
    p_fail = float(special.ndtr(-z))
    status: GuardrailStatus = "inconclusive"
    if p_pass < alpha:
        status = "pass"
    elif p_fail < alpha:
        status = "fail"
    return GuardrailResult(status, margin, harm, p_pass, p_fail)
