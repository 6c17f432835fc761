"""Result types of the engine and the warning codes it emits.

Every result is a frozen dataclass whose fields map 1:1 to the JSON contract of
``product.md`` §6. ``to_jsonable`` (and the ``to_dict`` methods) turn them into
plain ``dict``/``list``/``float``/``str`` trees where every non-finite float
(NaN, ±inf: "not computable") becomes ``None``, since JSON has no NaN.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "WARNING_CODES",
    "AnalysisResult",
    "BayesianResult",
    "Comparison",
    "CupedResult",
    "Estimate",
    "GuardrailResult",
    "MetricResult",
    "SequentialResult",
    "SrmResult",
    "VariantStats",
    "to_jsonable",
]

# Warning codes: data conditions reported in results, never raised.
EMPTY_ARM = "empty_arm"  # an arm has no units
INSUFFICIENT_DATA = "insufficient_data"  # an arm has fewer than 2 units: no variance
ZERO_VARIANCE = "zero_variance"  # the difference has zero standard error
ZERO_CONTROL_MEAN = "zero_control_mean"  # relative lift undefined (division by 0)
ZERO_DENOMINATOR = "zero_denominator"  # a ratio metric arm has Σden = 0
MISSING_VARIANT = "missing_variant"  # the metric has no summary for this treatment
CUPED_MISSING_COVARIATE = "cuped_missing_covariate"  # no pre-period sums: unadjusted only
CUPED_NO_COVARIATE_VARIANCE = "cuped_no_covariate_variance"  # var(pre) = 0: fell back
CUPED_NOT_SUPPORTED = "cuped_not_supported"  # ratio metrics are not CUPED-adjusted
GUARDRAIL_MISSING_MARGIN = "guardrail_missing_margin"  # guardrail metric without margin
SRM_NO_UNITS = "srm_no_units"  # SRM test on zero units: p = 1
# A sum of an arm overflowed (or is NaN): values too large for double precision, e.g. stored
# before ingestion bounded them. Estimates are NaN; no test is run on such sums.
NON_FINITE_STATISTICS = "non_finite_statistics"

WARNING_CODES: frozenset[str] = frozenset(
    {
        EMPTY_ARM,
        INSUFFICIENT_DATA,
        ZERO_VARIANCE,
        ZERO_CONTROL_MEAN,
        ZERO_DENOMINATOR,
        MISSING_VARIANT,
        CUPED_MISSING_COVARIATE,
        CUPED_NO_COVARIATE_VARIANCE,
        CUPED_NOT_SUPPORTED,
        GUARDRAIL_MISSING_MARGIN,
        SRM_NO_UNITS,
        NON_FINITE_STATISTICS,
    }
)

GuardrailStatus = Literal["pass", "fail", "inconclusive"]


def to_jsonable(value: Any) -> Any:
    """Convert a result (dataclass, mapping, sequence, float) to JSON-ready types.

    Non-finite floats become ``None``; tuples become lists; dataclasses and
    mappings become dicts.

    Parameters
    ----------
    value : Any
        A result object or part of one.

    Returns
    -------
    Any
        A tree of ``dict``, ``list``, ``str``, ``int``, ``float``, ``bool`` and ``None``.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    # numpy scalars and other numbers
    return to_jsonable(float(value))


class _JsonMixin:
    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """This result as a JSON-ready dict (NaN/inf → ``None``)."""
        out: dict[str, Any] = to_jsonable(self)
        return out


@dataclass(frozen=True, slots=True)
class Estimate(_JsonMixin):
    """A point estimate with its two-sided interval and p-value.

    ``std_error`` is the standard error used; ``df`` the Welch–Satterthwaite
    degrees of freedom for t-based results, NaN (JSON ``null``) for normal ones.
    """

    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    std_error: float = math.nan
    df: float = math.nan


NAN_ESTIMATE = Estimate(math.nan, math.nan, math.nan, math.nan)


@dataclass(frozen=True, slots=True)
class CupedResult(_JsonMixin):
    """CUPED-adjusted comparison (Deng et al. 2013).

    ``variance_reduction`` = 1 − Var(adjusted difference) / Var(unadjusted difference).
    """

    absolute: Estimate
    relative: Estimate
    theta: float
    variance_reduction: float


@dataclass(frozen=True, slots=True)
class SequentialResult(_JsonMixin):
    """Always-valid confidence sequences and p-values (Waudby-Smith et al. 2023)."""

    absolute: Estimate
    relative: Estimate
    n_star: float


@dataclass(frozen=True, slots=True)
class BayesianResult(_JsonMixin):
    """Gaussian posterior of the relative lift.

    ``chance_to_win``: posterior probability that the treatment is better
    (respecting ``higher_is_better``); ``expected_loss``: expected relative
    loss of shipping the treatment; ``expected_loss_control``: of keeping the
    control; ``ci_low``/``ci_high``: equal-tailed 1 − α credible interval.
    """

    chance_to_win: float
    expected_loss: float
    expected_loss_control: float
    ci_low: float
    ci_high: float
    posterior_mean: float
    posterior_sd: float


@dataclass(frozen=True, slots=True)
class GuardrailResult(_JsonMixin):
    """Non-inferiority verdict of a guardrail metric.

    ``harm`` is the estimated relative harm (−lift for higher-is-better
    metrics, +lift otherwise); ``p_value`` the one-sided p-value of
    H0: harm ≥ margin (small → ``pass``); ``p_value_fail`` of H0: harm ≤ margin
    (small → ``fail``).
    """

    status: GuardrailStatus
    margin: float
    harm: float
    p_value: float
    p_value_fail: float


@dataclass(frozen=True, slots=True)
class Comparison(_JsonMixin):
    """One treatment against the control for one metric."""

    variant: str
    control: str
    absolute: Estimate
    relative: Estimate
    p_value_adjusted: float
    significant: bool
    cuped: CupedResult | None
    sequential: SequentialResult | None
    bayesian: BayesianResult | None
    guardrail: GuardrailResult | None
    warnings: tuple[str, ...]
    inference: Literal["fixed", "sequential"] = "fixed"
    cuped_applied: bool = False


@dataclass(frozen=True, slots=True)
class VariantStats(_JsonMixin):
    """Per-arm description: units, the metric's value (mean, rate or ratio), its sd."""

    variant: str
    units: int
    mean: float
    sd: float


@dataclass(frozen=True, slots=True)
class MetricResult(_JsonMixin):
    """All comparisons of one metric."""

    metric: str
    role: Literal["primary", "secondary", "guardrail"]
    type: Literal["binomial", "mean", "ratio"]
    variants: tuple[VariantStats, ...]
    comparisons: tuple[Comparison, ...]


@dataclass(frozen=True, slots=True)
class SrmResult(_JsonMixin):
    """Sample-ratio-mismatch check: Pearson χ² of units against weights."""

    p_value: float
    mismatch: bool
    observed: Mapping[str, int]
    expected: Mapping[str, float]
    statistic: float
    threshold: float
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AnalysisResult(_JsonMixin):
    """Everything :func:`stats.analyze` computes for one experiment."""

    srm: SrmResult | None
    metrics: tuple[MetricResult, ...]
    alpha: float
    correction: str
