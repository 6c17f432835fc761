"""The single entry point of the engine: :func:`analyze` one experiment."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from stats import results as codes
from stats.bayesian import gaussian_posterior
from stats.cuped import cuped_compare
from stats.frequentist import check_alpha, relative_lift, welch_test
from stats.guardrails import non_inferiority
from stats.multiple import CORRECTIONS, Correction, adjust_p_values
from stats.ratio import compare_ratios, ratio_variance
from stats.results import (
    AnalysisResult,
    BayesianResult,
    Comparison,
    CupedResult,
    Estimate,
    GuardrailResult,
    MetricResult,
    SequentialResult,
    SrmResult,
    VariantStats,
)
from stats.sequential import DEFAULT_N_STAR, confidence_sequence
from stats.srm import DEFAULT_SRM_THRESHOLD, srm_test
from stats.summaries import MeanSummary, RatioSummary, Summary

__all__ = ["AnalysisSettings", "MetricInput", "Role", "SrmInput", "analyze"]

Role = Literal["primary", "secondary", "guardrail"]
MetricType = Literal["binomial", "mean", "ratio"]
_ROLES = ("primary", "secondary", "guardrail")
_TYPES = ("binomial", "mean", "ratio")
_NAN = math.nan
_NAN_ESTIMATE = Estimate(_NAN, _NAN, _NAN, _NAN)


@dataclass(frozen=True)
class MetricInput:
    """One metric of the experiment with the sufficient statistics of every arm.

    Parameters
    ----------
    key : str
        Metric key.
    type : {"binomial", "mean", "ratio"}
        Binomial and mean metrics take :class:`~stats.summaries.MeanSummary`,
        ratio metrics :class:`~stats.summaries.RatioSummary`.
    variants : mapping of str to summary
        Variant key → that arm's summary (the control included).
    role : {"primary", "secondary", "guardrail"}, default "primary"
    higher_is_better : bool, default True
    guardrail_margin : float, optional
        Largest tolerated relative harm (> 0), for guardrail metrics.
    """

    key: str
    type: MetricType
    variants: Mapping[str, Summary]
    role: Role = "primary"
    higher_is_better: bool = True
    guardrail_margin: float | None = None

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise ValueError(
                f"metric {self.key!r}: role must be one of {_ROLES}, got {self.role!r}"
            )
        if self.type not in _TYPES:
            raise ValueError(
                f"metric {self.key!r}: type must be one of {_TYPES}, got {self.type!r}"
            )
        expected = RatioSummary if self.type == "ratio" else MeanSummary
        for variant, summary in self.variants.items():
            if not isinstance(summary, expected):
                raise ValueError(
                    f"metric {self.key!r}, variant {variant!r}: a {self.type} metric takes "
                    f"{expected.__name__}, got {type(summary).__name__}"
                )
        margin = self.guardrail_margin
        if margin is not None and (not (margin > 0.0) or not math.isfinite(margin)):
            raise ValueError(f"metric {self.key!r}: guardrail_margin must be > 0, got {margin!r}")


@dataclass(frozen=True)
class SrmInput:
    """Units per variant and the configured weights, for the SRM check."""

    units: Mapping[str, int]
    weights: Mapping[str, float]


@dataclass(frozen=True)
class AnalysisSettings:
    """Analysis settings of the protocol (``product.md`` §2 ``analysis``).

    Parameters
    ----------
    alpha : float, default 0.05
        Two-sided level, in (0, 1).
    correction : {"holm", "bh", "bonferroni", "none"}, default "holm"
    cuped : bool, default True
    sequential : bool, default False
        ``method: sequential``: decisions use the always-valid p-values.
    n_star : float, default 5000
        Sequential tuning parameter (total units where the sequence is tightest).
    bayesian : bool, default False
    prior_mean, prior_sd : float, optional
        Normal prior on the relative lift; both ``None`` = flat prior.
    srm_threshold : float, default 0.001
    """

    alpha: float = 0.05
    correction: Correction = "holm"
    cuped: bool = True
    sequential: bool = False
    n_star: float = DEFAULT_N_STAR
    bayesian: bool = False
    prior_mean: float | None = None
    prior_sd: float | None = None
    srm_threshold: float = DEFAULT_SRM_THRESHOLD

    def __post_init__(self) -> None:
        check_alpha(self.alpha)
        if self.correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {CORRECTIONS}, got {self.correction!r}")
        if not (self.n_star > 0.0) or not math.isfinite(self.n_star):
            raise ValueError(f"n_star must be a finite number > 0, got {self.n_star!r}")
        if (self.prior_mean is None) != (self.prior_sd is None):
            raise ValueError("give both prior_mean and prior_sd, or neither (flat prior)")
        if self.prior_sd is not None and not self.prior_sd > 0.0:
            raise ValueError(f"prior_sd must be > 0, got {self.prior_sd!r}")
        if not (0.0 < self.srm_threshold < 1.0):
            raise ValueError(f"srm_threshold must be in (0, 1), got {self.srm_threshold!r}")


@dataclass
class _Draft:
    """A comparison before the family-wide correction."""

    variant: str
    absolute: Estimate
    relative: Estimate
    decision_p: float
    cuped: CupedResult | None
    sequential: SequentialResult | None
    bayesian: BayesianResult | None
    guardrail: GuardrailResult | None
    warnings: list[str] = field(default_factory=list)
    cuped_applied: bool = False


def _arm_warnings(summary: Summary, out: list[str]) -> None:
    if summary.n == 0:
        _add(out, codes.EMPTY_ARM)
    elif summary.n < 2:
        _add(out, codes.INSUFFICIENT_DATA)


def _add(out: list[str], code: str) -> None:
    if code not in out:
        out.append(code)


def _compare(
    metric: MetricInput,
    control: Summary,
    treatment: Summary,
    variant: str,
    settings: AnalysisSettings,
) -> _Draft:
    alpha = settings.alpha
    warnings: list[str] = []
    _arm_warnings(control, warnings)
    _arm_warnings(treatment, warnings)
    if not (control.finite and treatment.finite):
        # An overflowed sum: no estimate can be made from it, and every test would read NaN
        # or inf. The guardrail is inconclusive, not silently absent.
        _add(warnings, codes.NON_FINITE_STATISTICS)
        unknown: GuardrailResult | None = None
        if metric.role == "guardrail" and metric.guardrail_margin is not None:
            unknown = non_inferiority(
                _NAN,
                _NAN,
                margin=metric.guardrail_margin,
                higher_is_better=metric.higher_is_better,
                alpha=alpha,
            )
        return _Draft(
            variant, _NAN_ESTIMATE, _NAN_ESTIMATE, _NAN, None, None, None, unknown, warnings
        )
    cuped: CupedResult | None = None
    cuped_applied = False
    if isinstance(control, RatioSummary) and isinstance(treatment, RatioSummary):
        if control.n > 0 and treatment.n > 0 and (control.sum_den == 0 or treatment.sum_den == 0):
            _add(warnings, codes.ZERO_DENOMINATOR)
        absolute, relative = compare_ratios(control, treatment, alpha=alpha)
        if control.ratio == 0.0:
            _add(warnings, codes.ZERO_CONTROL_MEAN)
        if settings.cuped:
            _add(warnings, codes.CUPED_NOT_SUPPORTED)
        basis_abs, basis_rel = absolute, relative
    elif isinstance(control, MeanSummary) and isinstance(treatment, MeanSummary):
        mc, vc, nc = control.mean, control.variance, control.n
        mt, vt, nt = treatment.mean, treatment.variance, treatment.n
        absolute = welch_test(mc, vc, nc, mt, vt, nt, alpha=alpha)
        relative = relative_lift(mc, vc, nc, mt, vt, nt, alpha=alpha)
        if mc == 0.0:
            _add(warnings, codes.ZERO_CONTROL_MEAN)
        basis_abs, basis_rel = absolute, relative
        if settings.cuped:
            if not (control.has_covariate and treatment.has_covariate):
                _add(warnings, codes.CUPED_MISSING_COVARIATE)
            else:
                outcome = cuped_compare(control, treatment, alpha=alpha)
                if outcome is None:
                    if nc >= 2 and nt >= 2:
                        _add(warnings, codes.CUPED_NO_COVARIATE_VARIANCE)
                else:
                    # Reported beside the unadjusted result (product.md §6): the family,
                    # sequential, Bayesian and guardrail blocks all read the unadjusted tests.
                    cuped = outcome.result
                    cuped_applied = True
    else:  # pragma: no cover - MetricInput validates the summary types
        raise ValueError(f"metric {metric.key!r}: mixed summary types")
    if absolute.std_error == 0.0:
        _add(warnings, codes.ZERO_VARIANCE)

    sequential: SequentialResult | None = None
    decision_p = basis_abs.p_value
    if settings.sequential:
        n_total = control.n + treatment.n
        seq_abs = confidence_sequence(
            basis_abs.estimate, basis_abs.std_error**2, n_total, alpha=alpha, n_star=settings.n_star
        )
        seq_rel = confidence_sequence(
            basis_rel.estimate, basis_rel.std_error**2, n_total, alpha=alpha, n_star=settings.n_star
        )
        sequential = SequentialResult(seq_abs, seq_rel, settings.n_star)
        decision_p = seq_abs.p_value

    bayesian: BayesianResult | None = None
    if settings.bayesian:
        bayesian = gaussian_posterior(
            basis_rel.estimate,
            basis_rel.std_error**2,
            higher_is_better=metric.higher_is_better,
            alpha=alpha,
            prior_mean=settings.prior_mean,
            prior_sd=settings.prior_sd,
        )

    guardrail: GuardrailResult | None = None
    if metric.role == "guardrail":
        if metric.guardrail_margin is None:
            _add(warnings, codes.GUARDRAIL_MISSING_MARGIN)
        else:
            guardrail = non_inferiority(
                basis_rel.estimate,
                basis_rel.std_error,
                margin=metric.guardrail_margin,
                higher_is_better=metric.higher_is_better,
                alpha=alpha,
            )
    return _Draft(
        variant,
        absolute,
        relative,
        decision_p,
        cuped,
        sequential,
        bayesian,
        guardrail,
        warnings,
        cuped_applied,
    )


def _variant_stats(variant: str, summary: Summary | None) -> VariantStats:
    if summary is None:
        return VariantStats(variant, 0, _NAN, _NAN)
    if not summary.finite:  # overflowed sums: the arm's units are known, its moments are not
        return VariantStats(variant, summary.n, _NAN, _NAN)
    if isinstance(summary, RatioSummary):
        sd = math.sqrt(ratio_variance(summary) * summary.n) if summary.n >= 2 else _NAN
        return VariantStats(variant, summary.n, summary.ratio, sd)
    return VariantStats(variant, summary.n, summary.mean, math.sqrt(summary.variance))


def analyze(
    metrics: Sequence[MetricInput],
    *,
    control: str,
    settings: AnalysisSettings | None = None,
    srm: SrmInput | None = None,
) -> AnalysisResult:
    """Analyse every metric of an experiment: each treatment against the control.

    Parameters
    ----------
    metrics : sequence of MetricInput
        The metrics with their per-arm summaries.
    control : str
        Key of the control variant; every metric must have a summary for it.
    settings : AnalysisSettings, optional
        Defaults: α = 0.05, Holm, CUPED on, fixed horizon, no Bayesian.
    srm : SrmInput, optional
        Units and weights per variant for the SRM check (``srm`` is ``None``
        in the result without it).

    Returns
    -------
    AnalysisResult
        One :class:`~stats.results.MetricResult` per metric, in input order,
        with one :class:`~stats.results.Comparison` per treatment (variants in
        order of first appearance across the metrics, then the SRM units).

    Raises
    ------
    ValueError
        On misuse: invalid settings, a metric without the control's summary,
        duplicated metric keys. Data conditions come back as warning codes.

    Notes
    -----
    *Decision basis.* As product.md §6 says, the p-values of the absolute
    tests form the multiple-testing family, and the sequential, Bayesian and
    guardrail layers read the unadjusted absolute and relative results. CUPED
    (``cuped_applied`` is true when it could be computed) is reported beside
    them in ``cuped`` and never changes the decision. With ``sequential``, the
    family uses the always-valid p-value of the absolute difference
    (``inference`` = "sequential"), otherwise the fixed-horizon one.

    *Family.* Every (primary or secondary metric × treatment) comparison; its
    p-values are adjusted together with ``settings.correction``;
    ``significant`` is ``p_value_adjusted < alpha``. NaN p-values stay NaN and
    do not count in the family size. Guardrails are outside the family: their
    ``p_value_adjusted`` is their unadjusted decision p-value and their verdict
    is ``guardrail.status``.
    """
    settings = settings if settings is not None else AnalysisSettings()
    keys = [m.key for m in metrics]
    if len(set(keys)) != len(keys):
        raise ValueError(f"metric keys must be unique, got {keys!r}")
    order: dict[str, None] = {control: None}
    for metric in metrics:
        if control not in metric.variants:
            raise ValueError(f"metric {metric.key!r} has no summary for the control {control!r}")
        order.update(dict.fromkeys(metric.variants))
    if srm is not None:
        order.update(dict.fromkeys(srm.units))
    treatments = [v for v in order if v != control]

    drafts: list[list[_Draft]] = []
    for metric in metrics:
        c = metric.variants[control]
        row: list[_Draft] = []
        for variant in treatments:
            t = metric.variants.get(variant)
            if t is None:
                row.append(
                    _Draft(
                        variant,
                        _NAN_ESTIMATE,
                        _NAN_ESTIMATE,
                        _NAN,
                        None,
                        None,
                        None,
                        None,
                        [codes.MISSING_VARIANT],
                    )
                )
            else:
                row.append(_compare(metric, c, t, variant, settings))
        drafts.append(row)

    family = [
        (i, j)
        for i, metric in enumerate(metrics)
        if metric.role != "guardrail"
        for j in range(len(treatments))
    ]
    adjusted_family = adjust_p_values(
        [drafts[i][j].decision_p for i, j in family], settings.correction
    )
    adjusted: dict[tuple[int, int], float] = dict(zip(family, adjusted_family, strict=True))

    inference: Literal["fixed", "sequential"] = "sequential" if settings.sequential else "fixed"
    metric_results: list[MetricResult] = []
    for i, metric in enumerate(metrics):
        comparisons: list[Comparison] = []
        for j, d in enumerate(drafts[i]):
            p_adj = adjusted.get((i, j), d.decision_p)
            comparisons.append(
                Comparison(
                    variant=d.variant,
                    control=control,
                    absolute=d.absolute,
                    relative=d.relative,
                    p_value_adjusted=p_adj,
                    significant=bool(p_adj < settings.alpha),
                    cuped=d.cuped,
                    sequential=d.sequential,
                    bayesian=d.bayesian,
                    guardrail=d.guardrail,
                    warnings=tuple(d.warnings),
                    inference=inference,
                    cuped_applied=d.cuped_applied,
                )
            )
        variants = tuple(_variant_stats(v, metric.variants.get(v)) for v in order)
        metric_results.append(
            MetricResult(metric.key, metric.role, metric.type, variants, tuple(comparisons))
        )

    srm_result: SrmResult | None = None
    if srm is not None:
        srm_result = srm_test(srm.units, srm.weights, threshold=settings.srm_threshold)
    return AnalysisResult(srm_result, tuple(metric_results), settings.alpha, settings.correction)
