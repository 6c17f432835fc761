"""Trialbook statistics engine: pure functions over sufficient statistics.

No I/O, no pandas, no import of ``service`` or ``sdk``. The service calls one
function, :func:`analyze`; the others are public for tests and notebooks.

Entry point
-----------
::

    from stats import (AnalysisSettings, MeanSummary, MetricInput, RatioSummary,
                       SrmInput, analyze)

    result = analyze(
        [
            MetricInput(
                key="checkout", type="binomial", role="primary",
                variants={"control": MeanSummary.from_binomial(10_000, 1_000),
                          "b": MeanSummary.from_binomial(10_000, 1_100)},
            ),
            MetricInput(
                key="revenue", type="mean", role="guardrail", guardrail_margin=0.02,
                variants={"control": MeanSummary(n, sum_x, sum_x2, sum_pre, sum_pre2, sum_x_pre),
                          "b": MeanSummary(...)},
            ),
            MetricInput(key="aov", type="ratio", role="secondary",
                        variants={"control": RatioSummary(n, sum_num, sum_den, sum_num2,
                                                          sum_den2, sum_num_den), ...}),
        ],
        control="control",
        settings=AnalysisSettings(alpha=0.05, correction="holm", cuped=True,
                                  sequential=False, n_star=5000, bayesian=True,
                                  prior_mean=None, prior_sd=None, srm_threshold=0.001),
        srm=SrmInput(units={"control": 10_000, "b": 10_000},
                     weights={"control": 0.5, "b": 0.5}),
    )
    payload = result.to_dict()   # JSON-ready: NaN / inf -> None

Inputs (frozen dataclasses)
    ``MeanSummary(n, sum_x, sum_x2, sum_pre=None, sum_pre2=None, sum_x_pre=None)`` for
    binomial and mean metrics (``MeanSummary.from_binomial(n, conversions)``,
    ``MeanSummary.from_array(x, pre=None)``); ``RatioSummary(n, sum_num, sum_den,
    sum_num2, sum_den2, sum_num_den)`` for ratio metrics; both add with ``+``.
    ``MetricInput(key, type, variants, role="primary", higher_is_better=True,
    guardrail_margin=None)``; ``AnalysisSettings(...)``; ``SrmInput(units, weights)``.

Output: :class:`AnalysisResult` ``{srm, metrics, alpha, correction}``
    ``srm``: ``{p_value, mismatch, observed, expected, statistic, threshold, warnings}``.
    ``metrics[]``: ``{metric, role, type, variants: [{variant, units, mean, sd}],
    comparisons: [...]}``; each comparison ``{variant, control, absolute, relative,
    p_value_adjusted, significant, cuped, sequential, bayesian, guardrail, warnings,
    inference, cuped_applied}`` where every estimate is ``{estimate, ci_low, ci_high,
    p_value, std_error, df}``, ``cuped`` = ``{absolute, relative, theta,
    variance_reduction}``, ``sequential`` = ``{absolute, relative, n_star}``,
    ``bayesian`` = ``{chance_to_win, expected_loss, expected_loss_control, ci_low,
    ci_high, posterior_mean, posterior_sd}``, ``guardrail`` = ``{status, margin, harm,
    p_value, p_value_fail}``. Blocks that are off are ``None``. In ``to_dict()`` every
    NaN or infinite float (a quantity that could not be computed: empty arm, n < 2,
    zero variance, zero control mean or denominator; ``df`` of normal-based results)
    becomes ``None``; ``warnings`` says why (codes in :data:`WARNING_CODES`).

Decision rules (see :func:`analyze`)
    Family = every primary/secondary metric × treatment; p-values adjusted with the
    correction; ``significant = p_value_adjusted < alpha``. The decision p-value is
    the absolute test's (Welch, or delta method for ratios; CUPED is reported beside
    it, product.md §6), the always-valid one when ``sequential``. Guardrails are
    outside the family.

Errors
    ``ValueError`` for misuse (α outside (0, 1), negative n, unknown correction,
    metric without the control); data conditions never raise.

Building blocks
    :mod:`stats.frequentist` (Welch, relative lift), :mod:`stats.ratio`,
    :mod:`stats.cuped`, :mod:`stats.sequential`, :mod:`stats.bayesian`,
    :mod:`stats.guardrails`, :mod:`stats.srm`, :mod:`stats.multiple`,
    :mod:`stats.group_sequential` (Lan–DeMets spending, efficacy bounds of the looks,
    ``AnalysisSettings(group_sequential=GroupSequentialDesign([t1, ..., tk]))``),
    :mod:`stats.power` (``sample_size_per_variant``, ``minimum_detectable_effect``,
    ``planned_duration_days``, ``progress``).
"""

from stats.analysis import (
    AnalysisSettings,
    GroupSequentialDesign,
    MetricInput,
    SrmInput,
    analyze,
)
from stats.group_sequential import crossing_probabilities, efficacy_bounds, spent_alpha
from stats.interaction import InteractionResult, InteractionTest, interaction_test
from stats.multiple import adjust_p_values
from stats.power import (
    minimum_detectable_effect,
    planned_duration_days,
    progress,
    sample_size_per_variant,
)
from stats.quantile import QuantileSummary, compare_quantiles, quantile_ranks
from stats.results import (
    WARNING_CODES,
    AnalysisResult,
    BayesianResult,
    Comparison,
    CupedResult,
    Estimate,
    GroupSequentialResult,
    GuardrailResult,
    LookBound,
    MetricResult,
    SequentialResult,
    SrmResult,
    VariantStats,
    to_jsonable,
)
from stats.srm import srm_test
from stats.summaries import MeanSummary, RatioCovariate, RatioSummary

__all__ = [
    "WARNING_CODES",
    "AnalysisResult",
    "AnalysisSettings",
    "BayesianResult",
    "Comparison",
    "CupedResult",
    "Estimate",
    "GroupSequentialDesign",
    "GroupSequentialResult",
    "GuardrailResult",
    "InteractionResult",
    "InteractionTest",
    "LookBound",
    "MeanSummary",
    "MetricInput",
    "MetricResult",
    "QuantileSummary",
    "RatioCovariate",
    "RatioSummary",
    "SequentialResult",
    "SrmInput",
    "SrmResult",
    "VariantStats",
    "adjust_p_values",
    "analyze",
    "compare_quantiles",
    "crossing_probabilities",
    "efficacy_bounds",
    "interaction_test",
    "minimum_detectable_effect",
    "planned_duration_days",
    "progress",
    "quantile_ranks",
    "sample_size_per_variant",
    "spent_alpha",
    "srm_test",
    "to_jsonable",
]
