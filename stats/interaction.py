r"""Interaction between two experiments that share units: does one's effect differ across the
other's arms?

For experiment A's metric and each of A's treatments :math:`t`, the effect is estimated
separately within every arm :math:`b` of experiment B (on the units exposed to both):
:math:`\hat\Delta_b = \hat\mu_{t,b} - \hat\mu_{c,b}` with its standard error :math:`s_b` (the
engine's absolute comparison for the metric's type: Welch, or the delta method for ratios).
The interaction of :math:`t` with B's arm :math:`b` (against B's control :math:`b_0`) is the
difference of those effects, a difference-in-differences,

.. math::

    \hat\delta_{t,b} = \hat\Delta_b - \hat\Delta_{b_0}, \qquad
    z = \hat\delta_{t,b} / \sqrt{s_b^2 + s_{b_0}^2}

(the cells are disjoint sets of units, so independent), with a two-sided normal p-value. The
tests of one pair are Bonferroni-adjusted together; an interaction is found when the smallest
adjusted p-value is below the level. This is the test of the interaction term in the two-way
model ``y ~ A * B`` with unequal cell variances (Kohavi, Tang & Xu 2020, §20 "interactions";
Montgomery, Design and Analysis of Experiments, ch. 5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from scipy import special

from stats.analysis import AnalysisSettings, MetricInput, analyze
from stats.frequentist import check_alpha
from stats.summaries import MeanSummary, RatioSummary

__all__ = ["InteractionResult", "InteractionTest", "interaction_test"]


@dataclass(frozen=True, slots=True)
class InteractionTest:
    """One difference of effects: A's ``treatment`` in B's ``other_variant`` vs B's control."""

    treatment: str
    other_variant: str
    effect: float  # A's effect within B's other_variant
    effect_in_control: float  # A's effect within B's control
    difference: float
    std_error: float
    p_value: float
    p_value_adjusted: float


@dataclass(frozen=True, slots=True)
class InteractionResult:
    """Every test of the pair and the verdict at level ``alpha``."""

    tests: tuple[InteractionTest, ...]
    p_value: float  # smallest Bonferroni-adjusted p-value (NaN when nothing is testable)
    alpha: float
    found: bool


def interaction_test(
    cells: Mapping[str, Mapping[str, MeanSummary | RatioSummary]],
    *,
    metric_type: str,
    control: str,
    other_control: str,
    alpha: float = 0.001,
) -> InteractionResult:
    """Test whether A's effect on a metric differs across B's arms.

    Parameters
    ----------
    cells : mapping
        ``{B variant: {A variant: summary}}`` of the units exposed to both experiments.
    metric_type : {"binomial", "mean", "ratio"}
        The metric's type (ratio cells take :class:`~stats.summaries.RatioSummary`).
    control, other_control : str
        A's and B's control variants.
    alpha : float, default 0.001
        Level of the pair's family of tests (an alert should be rare when nothing interacts).

    Returns
    -------
    InteractionResult
        Tests with NaN inference (an empty cell, zero variance) count in neither the family nor
        the verdict.
    """
    check_alpha(alpha)
    settings = AnalysisSettings(cuped=False)
    effects: dict[str, dict[str, tuple[float, float]]] = {}
    for b, arms in cells.items():
        if control not in arms:
            continue
        result = analyze(
            [MetricInput("m", metric_type, arms)],  # type: ignore[arg-type]
            control=control,
            settings=settings,
        )
        effects[b] = {
            c.variant: (c.absolute.estimate, c.absolute.std_error)
            for c in result.metrics[0].comparisons
        }
    base = effects.get(other_control, {})
    raw: list[tuple[str, str, float, float, float, float, float]] = []
    for b, by_t in effects.items():
        if b == other_control:
            continue
        for t, (est, se) in by_t.items():
            if t not in base:
                continue
            est0, se0 = base[t]
            diff = est - est0
            s = (
                math.sqrt(se * se + se0 * se0)
                if math.isfinite(se) and math.isfinite(se0)
                else math.nan
            )
            p = float(special.erfc(abs(diff) / s / math.sqrt(2.0))) if s > 0 else math.nan
            raw.append((t, b, est, est0, diff, s, p))
    family = sum(1 for r in raw if not math.isnan(r[6]))
    tests = tuple(
        InteractionTest(t, b, est, est0, diff, s, p, min(1.0, p * family) if family else p)
        for t, b, est, est0, diff, s, p in raw
    )
    valid = [x.p_value_adjusted for x in tests if not math.isnan(x.p_value_adjusted)]
    best = min(valid) if valid else math.nan
    return InteractionResult(tests, best, alpha, bool(valid) and best < alpha)
