"""Sums that overflowed double precision: a data condition answered with NaN and a warning.

Reference: IEEE 754 binary64 has a largest finite value of about 1.7976931348623157e308
(``sys.float_info.max``), so the square of 1.5e154 (2.25e308) is ``inf``; nothing here needs a
library to compare with, the expected outputs are NaN and the warning code by definition.
"""

from __future__ import annotations

import math
import sys

import pytest

import stats
from stats import MeanSummary, RatioSummary


def test_the_square_of_1_5e154_overflows_a_double():
    assert math.isinf(1.5e154 * 1.5e154)
    assert sys.float_info.max < 2.25e308


@pytest.mark.parametrize("bad", [math.inf, math.nan])
@pytest.mark.parametrize("role", ["primary", "secondary", "guardrail"])
def test_an_overflowed_sum_gives_nan_estimates_and_a_warning(bad, role):
    good = MeanSummary(50, 40.0, 60.0, 40.0, 60.0, 50.0)
    poisoned = MeanSummary(50, 1.5e154, bad, 40.0, 60.0, bad)
    other = stats.MetricInput("fine", "mean", {"c": good, "t": good}, role="secondary")
    metric = stats.MetricInput(
        "revenue",
        "mean",
        {"c": good, "t": poisoned},
        role=role,  # type: ignore[arg-type]
        guardrail_margin=0.1 if role == "guardrail" else None,
    )
    result = stats.analyze(
        [other, metric],
        control="c",
        settings=stats.AnalysisSettings(cuped=True, bayesian=True, sequential=True),
    ).to_dict()
    fine, revenue = result["metrics"]
    (comparison,) = revenue["comparisons"]
    assert comparison["warnings"] == ["non_finite_statistics"]
    for block in ("absolute", "relative"):
        assert set(comparison[block].values()) == {None}
    assert comparison["p_value_adjusted"] is None and comparison["significant"] is False
    assert [v["mean"] for v in revenue["variants"]] == [0.8, None]
    if role == "guardrail":
        assert comparison["guardrail"]["status"] == "inconclusive"
    # the other metric of the family is analysed as if the poisoned one were absent
    (same,) = fine["comparisons"]
    assert same["warnings"] == []
    assert same["absolute"]["estimate"] == pytest.approx(0.0, abs=1e-12)
    assert same["p_value_adjusted"] == pytest.approx(1.0, abs=1e-12)


def test_an_overflowed_ratio_sum_gives_nan_estimates_and_a_warning():
    good = RatioSummary(30, 30.0, 60.0, 40.0, 130.0, 70.0)
    poisoned = RatioSummary(30, 1e308, 60.0, math.inf, 130.0, math.inf)
    metric = stats.MetricInput("aov", "ratio", {"c": good, "t": poisoned}, role="primary")
    (result,) = stats.analyze([metric], control="c").to_dict()["metrics"]
    (comparison,) = result["comparisons"]
    assert "non_finite_statistics" in comparison["warnings"]
    assert comparison["absolute"]["estimate"] is None
    assert result["variants"][1]["mean"] is None


def test_summaries_accept_non_finite_sums_and_say_so():
    assert not MeanSummary(3, math.inf, math.inf).finite
    assert not MeanSummary(3, 1.0, 1.0, 1.0, math.nan, 1.0).finite
    assert MeanSummary(3, 1.0, 1.0, 1.0, 1.0, 1.0).finite
    assert not RatioSummary(3, -math.inf, 1.0, math.inf, 1.0, -math.inf).finite
    with pytest.raises(ValueError, match="number"):
        MeanSummary(3, "1.0", 1.0)  # type: ignore[arg-type]
