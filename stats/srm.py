"""Sample ratio mismatch: Pearson χ² of units per variant against the weights."""

from __future__ import annotations

import math
from collections.abc import Mapping

from scipy import special

from stats.results import SRM_NO_UNITS, SrmResult

__all__ = ["DEFAULT_SRM_THRESHOLD", "srm_test"]

DEFAULT_SRM_THRESHOLD = 0.001


def srm_test(
    observed: Mapping[str, int],
    weights: Mapping[str, float],
    *,
    threshold: float = DEFAULT_SRM_THRESHOLD,
) -> SrmResult:
    r"""Pearson χ² goodness-of-fit test of the observed split, any number of arms.

    Parameters
    ----------
    observed : mapping of str to int
        Units per variant (>= 0).
    weights : mapping of str to float
        Configured weight of every variant (> 0, same keys; normalised to sum to 1).
    threshold : float, default 0.001
        ``mismatch`` is ``p_value < threshold``.

    Returns
    -------
    SrmResult
        :math:`\chi^2 = \sum_i (o_i - e_i)^2 / e_i` with :math:`e_i = w_i N`, and
        :math:`p = Q(\chi^2; k - 1)`, the χ² survival function computed directly
        (``scipy.special.chdtrc``), so tiny p-values do not underflow to 0
        (52/48 on 100,000 units gives about 1e-36). With no units, ``p_value`` is
        1 and the warning ``srm_no_units`` is set.

    Raises
    ------
    ValueError
        On mismatched keys, fewer than two variants, a negative count, a
        weight <= 0 or a threshold outside (0, 1).

    References
    ----------
    .. [1] Fabijan et al. (2019). Diagnosing sample ratio mismatch in online
       controlled experiments. KDD '19.
    """
    if set(observed) != set(weights):
        raise ValueError(
            f"observed and weights must name the same variants, got {sorted(observed)} "
            f"and {sorted(weights)}"
        )
    if len(weights) < 2:
        raise ValueError("the SRM test needs at least two variants")
    if not (0.0 < threshold < 1.0):
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    if any(isinstance(u, bool) or u < 0 for u in observed.values()):
        raise ValueError(f"unit counts must be >= 0, got {dict(observed)!r}")
    if any(not (w > 0.0) or not math.isfinite(w) for w in weights.values()):
        raise ValueError(f"weights must be finite and > 0, got {dict(weights)!r}")
    total_w = math.fsum(weights.values())
    expected = {k: w / total_w for k, w in weights.items()}
    total = sum(observed.values())
    obs = {k: int(observed[k]) for k in weights}
    if total == 0:
        return SrmResult(1.0, False, obs, expected, 0.0, threshold, (SRM_NO_UNITS,))
    stat = math.fsum((obs[k] - e * total) ** 2 / (e * total) for k, e in expected.items())
    p = float(special.chdtrc(len(expected) - 1, stat))
    return SrmResult(p, p < threshold, obs, expected, stat, threshold)
