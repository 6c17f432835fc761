r"""Group sequential designs: Lan–DeMets α spending and efficacy bounds of the looks.

The protocol's sample size per variant is the horizon; a look at information fraction
:math:`t = n / n_{planned}` (units in the smallest arm over the planned units per arm) may
stop the experiment for efficacy when :math:`|Z_k| \ge c_k`. The bounds :math:`c_k` are two-
sided and symmetric; they spend the α of a spending function :math:`\alpha(t)` as the looks
happen (Lan & DeMets 1983): look :math:`k` at :math:`t_k` gets

.. math::

    P_0\left(|Z_1| < c_1, \dots, |Z_{k-1}| < c_{k-1}, |Z_k| \ge c_k\right)
    = \alpha(t_k) - \alpha(t_{k-1}),

under the canonical joint distribution of the looks' z statistics (multivariate normal,
:math:`\mathrm{cov}(Z_i, Z_j) = \sqrt{t_i / t_j}` for :math:`i \le j`; Jennison & Turnbull 2000,
§3.1). Nothing about later looks needs to be known in advance.

Spending functions (two-sided level α):

* ``obrien_fleming`` (default): each side spends :math:`\alpha/2` with Lan & DeMets' O'Brien–
  Fleming-type function, :math:`\alpha(t) = 2\left[2 - 2\Phi\left(z_{1-\alpha/4}/\sqrt t\right)
  \right]` in all (as R ``ldbounds``' ``iuse = 1`` and ``gsDesign``'s ``sfLDOF`` per side);
* ``power``: :math:`\alpha(t) = \alpha\, t^{\rho}` (ρ = 1 is Pocock-like, ρ = 3 close to
  O'Brien–Fleming; spotify-confidence's solver uses this family, ρ = 2 by default).

Both reach α at :math:`t = 1`; information beyond the horizon counts as :math:`t = 1`.

Computation: the recursive numerical integration of Armitage, McPherson & Rowe (1969) as
Jennison & Turnbull (2000, ch. 19) describe it, on the score scale :math:`S_k = Z_k\sqrt{t_k}`
(a Brownian motion, independent increments :math:`N(0, t_k - t_{k-1})`): the sub-density of
:math:`S_k` on the continuation region is carried from look to look on a Simpson grid, and each
bound is the root (Brent) of the crossing probability. Accuracy about 1e-6 in the bounds
(checked against ``scipy.stats.multivariate_normal``, an independent Genz integration, and
against bounds computed with R ``ldbounds`` 2.0.2 and spotify-confidence 4.1.0, stored with
their provenance in ``tests/stats/reference/group_sequential.json``; ``ldbounds``' coarser grid
overspends α by up to 4e-6, so its bounds sit up to 7e-5 below these).

References
----------
.. [1] Lan, K. K. G. & DeMets, D. L. (1983). Discrete sequential boundaries for clinical
   trials. Biometrika 70, 659-663.
.. [2] Jennison, C. & Turnbull, B. W. (2000). Group Sequential Methods with Applications to
   Clinical Trials. Chapman & Hall/CRC. §7.2 (error spending), ch. 19 (computation).
.. [3] Kim, K. & DeMets, D. L. (1987). Design and analysis of group sequential tests based on
   the type I error spending rate function. Biometrika 74, 149-154 (the power family).
.. [4] Armitage, P., McPherson, C. K. & Rowe, B. C. (1969). Repeated significance tests on
   accumulating data. JRSS A 132, 235-244.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import optimize, special

from stats.frequentist import check_alpha
from stats.results import Estimate, LookBound

__all__ = [
    "SPENDING_FUNCTIONS",
    "LookBound",
    "Spending",
    "crossing_probabilities",
    "efficacy_bounds",
    "group_sequential_estimate",
    "spent_alpha",
]

Spending = Literal["obrien_fleming", "power"]
SPENDING_FUNCTIONS: tuple[str, ...] = ("obrien_fleming", "power")
# Grid points (odd, for Simpson's rule) over each look's continuation region: at least
# _MIN_GRID, more when the looks are close (spacing <= a quarter of the step's sd).
_MIN_GRID = 201
_MAX_GRID = 2001
# Increments of spent α below this are "nothing to spend": the bound is +inf.
_TINY = 1e-300
# The grid of a look whose bound is +inf (or huge) stops at |Z| = 12 (mass beyond: 4e-33).
_Z_CAP = 12.0


def _phi_upper(x: np.ndarray | float) -> np.ndarray:
    """Upper tail 1 − Φ(x), accurate in the far tail."""
    return np.asarray(0.5 * special.erfc(np.asarray(x) / math.sqrt(2.0)))


def _check_spending(spending: str, rho: float | None) -> None:
    if spending not in SPENDING_FUNCTIONS:
        raise ValueError(f"spending must be one of {SPENDING_FUNCTIONS}, got {spending!r}")
    if spending == "power" and (rho is None or not (rho > 0.0) or not math.isfinite(rho)):
        raise ValueError(f"the power spending function needs rho > 0, got {rho!r}")


def spent_alpha(
    t: float, *, alpha: float, spending: Spending = "obrien_fleming", rho: float | None = None
) -> float:
    r"""Cumulative two-sided α spent by information fraction ``t``.

    Parameters
    ----------
    t : float
        Information fraction, >= 0 (values above 1 count as 1).
    alpha : float
        Two-sided level of the whole design, in (0, 1).
    spending : {"obrien_fleming", "power"}, default "obrien_fleming"
    rho : float, optional
        Exponent of the power family (> 0), required with ``spending="power"``.

    Returns
    -------
    float
        :math:`4 - 4\Phi(z_{1-\alpha/4}/\sqrt t)` (Lan–DeMets O'Brien–Fleming type, α/2 per side) or
        :math:`\alpha t^\rho`; 0 at :math:`t = 0`, α at :math:`t \ge 1`.

    References
    ----------
    .. [1] Lan & DeMets (1983), Biometrika 70, eq. (2.4); Kim & DeMets (1987).
    """
    check_alpha(alpha)
    _check_spending(spending, rho)
    if not t >= 0.0 or math.isnan(t):
        raise ValueError(f"information fraction must be >= 0, got {t!r}")
    t = min(t, 1.0)
    if t == 0.0:
        return 0.0
    if t == 1.0:
        return alpha
    if spending == "power":
        assert rho is not None
        return float(alpha * t**rho)
    # each side spends α/2 with the O'Brien–Fleming-type function of level α/2
    z = special.ndtri(1.0 - alpha / 4.0)
    return float(4.0 * _phi_upper(z / math.sqrt(t)))


def _simpson_weights(n: int, h: float) -> np.ndarray:
    w = np.ones(n)
    w[1:-1:2] = 4.0
    w[2:-1:2] = 2.0
    return w * h / 3.0


def efficacy_bounds(
    fractions: Sequence[float],
    *,
    alpha: float = 0.05,
    spending: Spending = "obrien_fleming",
    rho: float | None = None,
) -> list[LookBound]:
    r"""Two-sided efficacy bounds of the looks at ``fractions``, spending α as they happen.

    Parameters
    ----------
    fractions : sequence of float
        Information fractions of the looks so far, strictly increasing, > 0. Values above 1
        count as 1, so only the first look at or past the horizon may reach it; later ones get
        nothing to spend (bound ``inf``).
    alpha : float, default 0.05
        Two-sided level of the design.
    spending : {"obrien_fleming", "power"}, default "obrien_fleming"
    rho : float, optional
        Exponent of the power family.

    Returns
    -------
    list of LookBound
        One per look, in order.

    Raises
    ------
    ValueError
        On fractions that are not positive and strictly increasing, or invalid settings.

    Notes
    -----
    With score :math:`S_k = Z_k \sqrt{t_k}` and :math:`\Delta_k = t_k - t_{k-1}`, the
    sub-density of :math:`S_k` on the continuation region :math:`|S_k| < b_k = c_k\sqrt{t_k}`
    is :math:`f_1(s) = \phi(s/\sqrt{t_1})/\sqrt{t_1}` and
    :math:`f_k(s) = \int_{-b_{k-1}}^{b_{k-1}} f_{k-1}(u)\,
    \phi\left((s-u)/\sqrt{\Delta_k}\right)/\sqrt{\Delta_k}\,du`; the crossing probability of
    look :math:`k` is :math:`\int f_{k-1}(u)\left[\Phi\left(\frac{-b - u}{\sqrt{\Delta_k}}\right)
    + 1 - \Phi\left(\frac{b - u}{\sqrt{\Delta_k}}\right)\right] du`, solved for :math:`b` equal to
    :math:`\alpha(t_k) - \alpha(t_{k-1})` (Jennison & Turnbull 2000, §19.2; Simpson's rule).
    """
    return list(_bounds(tuple(float(t) for t in fractions), alpha, spending, rho))


@functools.lru_cache(maxsize=256)
def _bounds(
    ts: tuple[float, ...], alpha: float, spending: Spending, rho: float | None
) -> tuple[LookBound, ...]:
    """:func:`efficacy_bounds`, cached: every analysis of an experiment reads the same looks."""
    check_alpha(alpha)
    _check_spending(spending, rho)
    for i, t in enumerate(ts):
        if not (t > 0.0) or not math.isfinite(t):
            raise ValueError(f"information fractions must be finite and > 0, got {t!r}")
        if i and not t > ts[i - 1]:
            raise ValueError(f"information fractions must increase strictly, got {ts!r}")
    out: list[LookBound] = []
    prev_t = 0.0
    prev_spent = 0.0
    # The previous look's continuation region, materialised lazily (its grid spacing depends on
    # the next increment too): (half-width of S, sd of the step into it, the grid and weighted
    # density of the look before it, or None for the first look).
    pending: tuple[float, float, np.ndarray | None, np.ndarray | None] | None = None
    for k, raw_t in enumerate(ts, start=1):
        t = min(raw_t, 1.0)
        spent = spent_alpha(t, alpha=alpha, spending=spending, rho=rho)
        increment = max(spent - prev_spent, 0.0)
        if t <= prev_t:  # a look past the horizon after one at it: nothing left to spend
            out.append(LookBound(k, t, math.inf, 0.0, prev_spent, 0.0))
            continue
        sd = math.sqrt(t - prev_t)
        sqrt_t = math.sqrt(t)
        grid: np.ndarray | None = None
        dens: np.ndarray | None = None
        if pending is not None:
            grid, dens = _carry(*pending, next_sd=sd)

        c = _solve_bound(increment, sqrt_t, sd, grid, dens)
        nominal = float(2.0 * _phi_upper(c)) if math.isfinite(c) else 0.0
        out.append(LookBound(k, t, c, nominal, spent, increment))
        pending = (min(c, _Z_CAP) * sqrt_t, sd, grid, dens)
        prev_t, prev_spent = t, max(spent, prev_spent)
    return tuple(out)


def _crossing(
    c: float, sqrt_t: float, sd: float, grid: np.ndarray | None, dens: np.ndarray | None
) -> float:
    """P(continue to this look, then |Z| >= c here), from the previous look's sub-density."""
    if grid is None or dens is None:
        return float(2.0 * _phi_upper(c))
    b = c * sqrt_t
    return float(dens @ (_phi_upper((b + grid) / sd) + _phi_upper((b - grid) / sd)))


def _solve_bound(
    increment: float, sqrt_t: float, sd: float, grid: np.ndarray | None, dens: np.ndarray | None
) -> float:
    """The bound c whose crossing probability is ``increment`` (Brent, on the log scale)."""
    if increment <= _TINY:
        return math.inf
    if increment >= _crossing(0.0, sqrt_t, sd, grid, dens):
        return 0.0
    # log scale: the crossing probability falls like exp(-c²/2)
    target = math.log(increment)
    hi = 2.0
    while _crossing(hi, sqrt_t, sd, grid, dens) > increment and hi < 64.0:
        hi *= 2.0
    root = optimize.brentq(
        lambda x: math.log(max(_crossing(x, sqrt_t, sd, grid, dens), 1e-320)) - target,
        0.0,
        hi,
        xtol=1e-10,
        rtol=1e-12,
    )
    return float(root)


def _carry(
    half: float,
    sd: float,
    grid: np.ndarray | None,
    dens: np.ndarray | None,
    *,
    next_sd: float,
    shift: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Grid over ``(-half, half)`` and the Simpson-weighted sub-density of the look on it.

    The spacing is at most a quarter of both normal kernels' sd (the step into this look and
    the step out of it), with at least :data:`_MIN_GRID` points. ``shift`` is the mean of the
    step into this look (the drift times the information step; 0 under the null).
    """
    h_max = min(sd, next_sd) / 4.0
    n = max(_MIN_GRID, min(_MAX_GRID, math.ceil(2.0 * half / h_max) + 1))
    n += 1 - n % 2  # odd, for Simpson's rule
    new_grid = np.linspace(-half, half, n)
    w = _simpson_weights(n, new_grid[1] - new_grid[0])
    norm = 1.0 / (sd * math.sqrt(2.0 * math.pi))
    if grid is None or dens is None:  # the first look: S_1 ~ N(0, t_1), sd = sqrt(t_1)
        f = np.exp(-0.5 * ((new_grid - shift) / sd) ** 2) * norm
    else:
        diff = (new_grid[:, None] - grid[None, :] - shift) / sd
        f = (np.exp(-0.5 * diff * diff) * norm) @ dens
    return new_grid, f * w


def crossing_probabilities(
    fractions: Sequence[float], bounds: Sequence[float], *, drift: float = 0.0
) -> list[float]:
    r"""Probability of first crossing each look's two-sided bound, under a drift.

    Parameters
    ----------
    fractions : sequence of float
        Information fractions of the looks, strictly increasing, > 0 (not capped at 1 here).
    bounds : sequence of float
        The looks' z bounds (``inf``: no crossing possible).
    drift : float, default 0.0
        :math:`\theta` with :math:`E[Z_k] = \theta\sqrt{t_k}`: the standardised effect at
        :math:`t = 1` (0 under the null; :math:`z_{1-\alpha/2} + z_{1-\beta}` is the drift a
        fixed design of power :math:`1 - \beta` is planned for).

    Returns
    -------
    list of float
        :math:`P(\text{stop at look } k)` for every look; their sum is the power (or, with
        drift 0, the α actually spent).

    Notes
    -----
    The same recursion as :func:`efficacy_bounds`, with increments
    :math:`N(\theta\Delta_k, \Delta_k)` on the score scale.
    """
    ts = [float(t) for t in fractions]
    if len(ts) != len(bounds):
        raise ValueError("give one bound per look")
    out: list[float] = []
    prev_t = 0.0
    prev_shift = 0.0
    # the previous look's region, as in efficacy_bounds: (half-width, sd, grid, density before)
    pending: tuple[float, float, np.ndarray | None, np.ndarray | None] | None = None
    for t, c in zip(ts, bounds, strict=True):
        if not t > prev_t:
            raise ValueError(f"information fractions must increase strictly, got {ts!r}")
        sd = math.sqrt(t - prev_t)
        shift = drift * (t - prev_t)
        b = c * math.sqrt(t)
        grid: np.ndarray | None = None
        dens: np.ndarray | None = None
        if pending is None:
            mean = drift * t
            p = float(_phi_upper((b - mean) / sd) + _phi_upper((b + mean) / sd))
        else:
            grid, dens = _carry(*pending, next_sd=sd, shift=prev_shift)
            tails = _phi_upper((b - grid - shift) / sd) + _phi_upper((b + grid + shift) / sd)
            p = float(dens @ tails)
        out.append(p if math.isfinite(b) else 0.0)
        pending = (min(c, _Z_CAP) * math.sqrt(t), sd, grid, dens)
        prev_t, prev_shift = t, shift
    return out


def group_sequential_estimate(estimate: float, std_error: float, bound: float) -> Estimate:
    r"""Repeated confidence interval and nominal p-value of one comparison at a look.

    Parameters
    ----------
    estimate : float
        Point estimate (absolute or relative difference).
    std_error : float
        Its standard error.
    bound : float
        The look's two-sided z bound :math:`c_k` (:func:`efficacy_bounds`).

    Returns
    -------
    Estimate
        ``estimate`` ± :math:`c_k \cdot` ``std_error`` (the repeated confidence interval of
        Jennison & Turnbull 1989: it covers the truth at every look simultaneously with
        probability ≥ 1 − α) and the nominal two-sided normal p-value
        :math:`2(1 - \Phi(|\hat\theta| / se))`, which crosses the bound exactly when it is below
        the look's ``nominal_alpha``. NaN inference when the standard error is not positive.

    References
    ----------
    .. [1] Jennison, C. & Turnbull, B. W. (1989). Interim analyses: the repeated confidence
       interval approach. JRSS B 51, 305-361.
    """
    if not (std_error > 0.0) or not math.isfinite(std_error) or not math.isfinite(estimate):
        nan = math.nan
        return Estimate(estimate, nan, nan, nan, std_error)
    z = abs(estimate) / std_error
    p = float(2.0 * _phi_upper(z))
    half = bound * std_error if math.isfinite(bound) else math.inf
    return Estimate(estimate, estimate - half, estimate + half, p, std_error)
