"""Warning codes of the results as sentences a reviewer reads (the code stays in a tooltip in
HTML and in parentheses in Markdown)."""

from __future__ import annotations

from dataclasses import dataclass

WARNING_TEXT: dict[str, str] = {
    "empty_arm": "An arm has no units yet.",
    "insufficient_data": "An arm has fewer than 2 units: no variance, no test.",
    "zero_variance": "The difference has zero variance: no test is possible.",
    "zero_control_mean": "The control's mean is 0: the relative lift is undefined.",
    "zero_denominator": "A ratio's denominator sums to 0 in an arm: the ratio is undefined.",
    "missing_variant": "This treatment has no data for the metric.",
    "cuped_missing_covariate": "No pre-period data: CUPED was not applied.",
    "cuped_no_covariate_variance": (
        "The pre-period values do not vary: CUPED fell back to the unadjusted estimate."
    ),
    "cuped_not_supported": "CUPED does not apply to this metric type.",
    "guardrail_missing_margin": "The guardrail has no margin: no verdict.",
    "srm_no_units": "No units yet: the sample ratio check has nothing to test.",
    "group_sequential_past_horizon": (
        "Past the planned sample: no α is left to spend; read at the final bound."
    ),
    "non_finite_statistics": (
        "The sums are too large for double precision: the estimates are not computable."
    ),
    "no_exposures": "No exposures have been received yet.",
    "unknown_variant_exposures": "Some exposures name a variant the protocol does not have.",
    "metric_not_found": "A metric of the protocol is not in the catalogue.",
    "no_planned_sample_size": "No planned sample size (the protocol gives no baseline).",
    "sample_size_estimated_from_data": (
        "The planned sample size was estimated from the control arm's data."
    ),
    "group_sequential_no_horizon": (
        "Group sequential without a planned sample size: read as a fixed design."
    ),
}


@dataclass(frozen=True)
class WarningView:
    """One warning: its code and the sentence shown for it."""

    code: str
    text: str


def warning(code: str) -> WarningView:
    """The sentence of a warning code (an unknown code is shown as it is)."""
    return WarningView(code, WARNING_TEXT.get(code, code.replace("_", " ").capitalize() + "."))
