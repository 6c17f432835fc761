"""Multiple-testing corrections over a family of p-values."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = ["CORRECTIONS", "Correction", "adjust_p_values"]

Correction = Literal["holm", "bh", "bonferroni", "none"]
CORRECTIONS: tuple[str, ...] = ("holm", "bh", "bonferroni", "none")


def adjust_p_values(p_values: Sequence[float], method: str = "holm") -> list[float]:
    r"""Adjusted p-values of a family, in the input order.

    Parameters
    ----------
    p_values : sequence of float
        Raw p-values in [0, 1]; NaN entries (tests that could not be computed)
        stay NaN and do not count in the family size :math:`m`.
    method : {"holm", "bh", "bonferroni", "none"}
        Holm's step-down (FWER), Benjamini–Hochberg step-up (FDR), Bonferroni
        (FWER), or no correction.

    Returns
    -------
    list of float
        With :math:`p_{(1)} \le \dots \le p_{(m)}`:
        Holm :math:`\tilde p_{(i)} = \max_{j \le i} \min(1, (m - j + 1) p_{(j)})`;
        BH :math:`\tilde p_{(i)} = \min_{j \ge i} \min(1, m p_{(j)} / j)`;
        Bonferroni :math:`\min(1, m p_i)`. Same values as statsmodels'
        ``multipletests`` (``holm``, ``fdr_bh``, ``bonferroni``).

    Raises
    ------
    ValueError
        On an unknown method or a p-value outside [0, 1].

    References
    ----------
    .. [1] Holm, S. (1979). Scand. J. Statist. 6, 65-70.
    .. [2] Benjamini, Y. & Hochberg, Y. (1995). JRSS B 57, 289-300.
    """
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {method!r}")
    p = np.asarray(p_values, dtype=float)
    out = p.copy()
    ok = ~np.isnan(p)
    if np.any((p[ok] < 0.0) | (p[ok] > 1.0)):
        raise ValueError("p-values must be in [0, 1]")
    m = int(ok.sum())
    if method == "none" or m == 0:
        return [float(v) for v in out]
    pv = p[ok]
    if method == "bonferroni":
        adj = np.minimum(pv * m, 1.0)
    else:
        order = np.argsort(pv, kind="mergesort")
        sorted_p = pv[order]
        ranks = np.arange(1, m + 1)
        if method == "holm":
            stepped = np.maximum.accumulate(np.minimum((m - ranks + 1) * sorted_p, 1.0))
        else:  # bh
            stepped = np.minimum.accumulate((m * sorted_p / ranks)[::-1])[::-1]
            stepped = np.minimum(stepped, 1.0)
        adj = np.empty(m)
        adj[order] = stepped
    out[ok] = adj
    return [v if not math.isnan(v) else math.nan for v in map(float, out)]
