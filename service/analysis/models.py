"""Response schemas of ``GET /v1/experiments/{key}/results`` (``product.md`` §6).

Every float that could not be computed (an empty arm, n < 2, zero variance) is ``null``; the
``warnings`` lists say why.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Recommendation = Literal["ship", "roll_back", "keep_running", "inconclusive", "invalid"]


class EstimatePublic(BaseModel):
    """A point estimate, its two-sided confidence interval and p-value."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    std_error: float | None = None
    df: float | None = Field(default=None, description="Welch–Satterthwaite df; null if normal")


class CupedPublic(BaseModel):
    absolute: EstimatePublic
    relative: EstimatePublic
    theta: float | None
    variance_reduction: float | None


class SequentialPublic(BaseModel):
    absolute: EstimatePublic
    relative: EstimatePublic
    n_star: float | None


class GroupSequentialPublic(BaseModel):
    """A comparison at the current look of a group sequential design."""

    absolute: EstimatePublic = Field(
        description="repeated confidence interval: estimate ± bound·se"
    )
    relative: EstimatePublic
    look: int
    information_fraction: float
    bound: float | None = Field(description="two-sided z efficacy bound; null: no α to spend")
    nominal_alpha: float = Field(description="adjusted α of the look: p below it crosses")
    crossed: bool = Field(description="the efficacy bound is crossed: may stop for efficacy")


class LookPublic(BaseModel):
    look: int
    information_fraction: float
    bound: float | None
    nominal_alpha: float = Field(description="adjusted (nominal) significance level of the look")
    alpha_spent: float = Field(description="cumulative α spent up to this look")
    alpha_increment: float


class GroupSequentialDesignPublic(BaseModel):
    spending: Literal["obrien_fleming", "power"]
    rho: float | None = None
    looks: list[LookPublic] = Field(description="every look so far; the last is this analysis")


class BayesianPublic(BaseModel):
    chance_to_win: float | None
    expected_loss: float | None
    expected_loss_control: float | None = None
    ci_low: float | None
    ci_high: float | None
    posterior_mean: float | None = None
    posterior_sd: float | None = None


class GuardrailPublic(BaseModel):
    status: Literal["pass", "fail", "inconclusive"]
    margin: float
    harm: float | None = None
    p_value: float | None = None
    p_value_fail: float | None = None


class ComparisonPublic(BaseModel):
    variant: str
    control: str
    absolute: EstimatePublic
    relative: EstimatePublic
    p_value_adjusted: float | None = Field(
        description="absolute-test p-value adjusted over the family (primary and secondary "
        "metrics × treatments); for guardrails, outside the family, the unadjusted one"
    )
    significant: bool
    cuped: CupedPublic | None = None
    sequential: SequentialPublic | None = None
    bayesian: BayesianPublic | None = None
    guardrail: GuardrailPublic | None = None
    warnings: list[str]
    inference: Literal["fixed", "sequential", "group_sequential"] = "fixed"
    cuped_applied: bool = False
    group_sequential: GroupSequentialPublic | None = None


class VariantPublic(BaseModel):
    variant: str
    units: int
    mean: float | None = Field(
        description="mean per unit (rate for binomial, Σnum/Σden for ratio, the arm's quantile "
        "of per-unit values for quantile)"
    )
    sd: float | None


class MetricResultPublic(BaseModel):
    metric: str
    role: Literal["primary", "secondary", "guardrail"]
    type: Literal["binomial", "mean", "ratio", "quantile"]
    name: str
    higher_is_better: bool
    winsorized: bool = Field(description="per-unit values were capped at the metric's percentiles")
    variants: list[VariantPublic]
    comparisons: list[ComparisonPublic]


class SrmPublic(BaseModel):
    p_value: float | None
    mismatch: bool
    observed: dict[str, int]
    expected: dict[str, float]
    statistic: float | None = None
    threshold: float
    warnings: list[str] = Field(default_factory=list)


class PowerPublic(BaseModel):
    sample_size_per_variant: int | None
    units_so_far: int = Field(
        description="units in the smallest arm (the one that limits progress)"
    )
    units_per_variant: dict[str, int]
    progress: float | None = Field(description="min over arms of units / sample_size_per_variant")
    sample_size_estimated: bool = Field(
        default=False,
        description="the protocol gave no baseline: the sample size comes from the control arm's "
        "data ingested so far (see `estimated_baseline`)",
    )
    estimated_baseline: dict[str, float] | None = Field(
        default=None, description="`rate` (binomial) or `mean` and `sd`, from the control arm"
    )


class DecisionPublic(BaseModel):
    recommendation: Recommendation
    variant: str | None = None
    reasons: list[str]


class ResultsPublic(BaseModel):
    experiment: str
    phase: int
    status: str
    computed_at: datetime
    method: Literal["fixed", "sequential", "group_sequential"]
    group_sequential: GroupSequentialDesignPublic | None = Field(
        default=None, description="method group_sequential: spending function and the looks"
    )
    alpha: float
    correction: str
    srm: SrmPublic
    multiple_exposures: int = Field(description="units exposed to more than one variant: excluded")
    overridden_units: int = Field(description="exposed units with a forced override: excluded")
    units: int = Field(description="units analysed (after both exclusions)")
    metrics: list[MetricResultPublic]
    power: PowerPublic
    decision: DecisionPublic
    warnings: list[str] = Field(
        description="data conditions of the experiment as a whole (e.g. `no_exposures`)"
    )
