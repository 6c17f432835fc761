from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from numpy.testing import assert_allclose
from statsmodels.stats.power import NormalIndPower

from stats.power import (
    minimum_detectable_effect,
    planned_duration_days,
    progress,
    sample_size_per_variant,
)

_BASELINE_KEYS = ("baseline_rate", "baseline_mean", "baseline_sd")


def _kwargs(case: dict[str, Any]) -> dict[str, Any]:
    out = {k: case[k] for k in _BASELINE_KEYS if k in case}
    out.update(
        metric_type=case["metric_type"],
        alpha=case["alpha"],
        power=case["power"],
        weights=case["weights"],
    )
    return out


def test_sample_size_matches_hand_worked_references(reference: Callable[[str], Any]) -> None:
    for case in reference("power")["sample_size"]:
        got = sample_size_per_variant(mde=case["mde"], **_kwargs(case))
        assert got == case["expected"], case["case"]


def test_the_two_figures_promised_to_the_service() -> None:
    assert sample_size_per_variant(metric_type="binomial", baseline_rate=0.10, mde=0.10) == 14749
    assert (
        sample_size_per_variant(metric_type="mean", baseline_mean=50, baseline_sd=20, mde=0.05)
        == 1005
    )


def test_planned_duration_matches_hand_worked_references(reference: Callable[[str], Any]) -> None:
    for case in reference("power")["duration"]:
        expected = case.pop("expected")
        case.pop("case"), case.pop("working")
        assert planned_duration_days(**case) == expected


@pytest.mark.parametrize("ratio", [1.0, 2.0, 0.5])
def test_mean_sample_size_agrees_with_statsmodels_normal_power(ratio: float) -> None:
    # statsmodels NormalIndPower: nobs1 = (z_a + z_b)^2 (1 + 1/ratio) / es^2 with es = delta / sd,
    # nobs2 = ratio * nobs1 -- an independent implementation of the same two-sample z power.
    mean, sd, mde = 12.0, 7.0, 0.03
    es = mde * mean / sd
    nobs1 = NormalIndPower().solve_power(effect_size=es, alpha=0.05, power=0.8, ratio=ratio)
    smallest = min(nobs1, ratio * nobs1)
    weights = [1.0, ratio]
    got = sample_size_per_variant(
        metric_type="mean", baseline_mean=mean, baseline_sd=sd, mde=mde, weights=weights
    )
    assert got == math.ceil(smallest)


def test_binomial_sample_size_agrees_with_statsmodels_unpooled_effect_size() -> None:
    # With es = (p2 - p1) / sqrt((p1 q1 + p2 q2) / 2), statsmodels' equal-split nobs1 equals the
    # unpooled formula (z_a + z_b)^2 (p1 q1 + p2 q2) / (p2 - p1)^2.
    p1, mde = 0.031, 0.15
    p2 = p1 * (1 + mde)
    es = (p2 - p1) / math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / 2)
    nobs1 = NormalIndPower().solve_power(effect_size=es, alpha=0.1, power=0.9, ratio=1.0)
    got = sample_size_per_variant(
        metric_type="binomial", baseline_rate=p1, mde=mde, alpha=0.1, power=0.9
    )
    assert got == math.ceil(nobs1)


def test_every_treatment_reaches_the_power_with_unequal_arms() -> None:
    # 4 arms, control 40 %, treatments 30/20/10: the 10 % arm drives the requirement.
    weights = [0.4, 0.3, 0.2, 0.1]
    n = sample_size_per_variant(
        metric_type="mean", baseline_mean=10, baseline_sd=5, mde=0.1, weights=weights
    )
    total = n / 0.1
    # achieved power of the weakest comparison (control vs 10 % arm) is >= 0.8
    es = 1.0 / 5.0
    ratio = 0.1 / 0.4
    achieved = NormalIndPower().power(effect_size=es, nobs1=0.4 * total, alpha=0.05, ratio=ratio)
    assert achieved >= 0.8
    # and one unit less in the smallest arm is not enough
    achieved_less = NormalIndPower().power(
        effect_size=es, nobs1=0.4 * (n - 1) / 0.1, alpha=0.05, ratio=ratio
    )
    assert achieved_less < 0.8


def test_mde_inverts_sample_size_for_means() -> None:
    for weights in (None, [0.5, 0.25, 0.25], [0.2, 0.8]):
        n = sample_size_per_variant(
            metric_type="mean", baseline_mean=50, baseline_sd=20, mde=0.05, weights=weights
        )
        mde = minimum_detectable_effect(
            metric_type="mean",
            sample_size_per_variant=n,
            baseline_mean=50,
            baseline_sd=20,
            weights=weights,
        )
        # n was rounded up, so the detectable effect at n is at most 0.05 and close to it
        assert mde <= 0.05
        assert_allclose(mde, 0.05, rtol=2e-3)


def test_mde_inverts_sample_size_for_binomial_exactly_before_rounding() -> None:
    z2 = 7.848879734349088  # (z_0.975 + z_0.8)^2, see reference/power.json
    p1, p2 = 0.10, 0.11
    n_exact = z2 * (p1 * (1 - p1) + p2 * (1 - p2)) / (p2 - p1) ** 2  # 14748.045 (hand)
    # minimum_detectable_effect takes an int; check at the rounded size it is just below 10 %
    mde = minimum_detectable_effect(
        metric_type="binomial", sample_size_per_variant=math.ceil(n_exact), baseline_rate=p1
    )
    assert 0.0999 < mde <= 0.1
    # and the closed-form check at that mde: the required n equals the given n
    p2m = p1 * (1 + mde)
    assert_allclose(
        z2 * (p1 * (1 - p1) + p2m * (1 - p2m)) / (p2m - p1) ** 2, math.ceil(n_exact), rtol=1e-9
    )


def test_mde_is_nan_when_no_rate_below_one_is_detectable() -> None:
    got = minimum_detectable_effect(
        metric_type="binomial", sample_size_per_variant=2, baseline_rate=0.5
    )
    assert math.isnan(got)


def test_more_power_or_smaller_alpha_needs_more_units() -> None:
    base = dict(metric_type="binomial", baseline_rate=0.2, mde=0.05)
    n0 = sample_size_per_variant(**base)  # type: ignore[arg-type]
    assert sample_size_per_variant(power=0.9, **base) > n0  # type: ignore[arg-type]
    assert sample_size_per_variant(alpha=0.01, **base) > n0  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(metric_type="binomial", baseline_rate=0.1, mde=0.1, alpha=0.0), "alpha"),
        (dict(metric_type="binomial", baseline_rate=0.1, mde=0.1, alpha=1.0), "alpha"),
        (dict(metric_type="binomial", baseline_rate=0.1, mde=0.1, power=1.0), "power"),
        (dict(metric_type="binomial", baseline_rate=0.1, mde=0.1, power=0.0), "power"),
        (dict(metric_type="binomial", baseline_rate=0.1, mde=0.0), "mde"),
        (dict(metric_type="binomial", baseline_rate=0.1, mde=-0.1), "mde"),
        (dict(metric_type="binomial", baseline_rate=1.0, mde=0.1), "baseline_rate"),
        (dict(metric_type="binomial", baseline_rate=0.0, mde=0.1), "baseline_rate"),
        (dict(metric_type="binomial", mde=0.1), "baseline_rate"),
        (dict(metric_type="binomial", baseline_rate=0.6, mde=0.8), "below 1"),
        (dict(metric_type="mean", baseline_mean=5.0, mde=0.1), "baseline_sd"),
        (dict(metric_type="mean", baseline_mean=5.0, baseline_sd=0.0, mde=0.1), "baseline_sd"),
        (dict(metric_type="ratio", baseline_mean=5.0, baseline_sd=-1.0, mde=0.1), "baseline_sd"),
        (dict(metric_type="mean", baseline_mean=0.0, baseline_sd=1.0, mde=0.1), "baseline_mean"),
        (dict(metric_type="count", baseline_mean=1.0, baseline_sd=1.0, mde=0.1), "metric_type"),
        (
            dict(metric_type="mean", baseline_mean=1.0, baseline_sd=1.0, mde=0.1, weights=[1.0]),
            "weights",
        ),
        (
            dict(
                metric_type="mean", baseline_mean=1.0, baseline_sd=1.0, mde=0.1, weights=[0.5, 0.0]
            ),
            "weight",
        ),
    ],
)
def test_invalid_inputs_raise_value_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sample_size_per_variant(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(
            sample_size_per_variant=0,
            weights=[0.5, 0.5],
            traffic_fraction=1.0,
            expected_daily_units=10.0,
        ),
        dict(
            sample_size_per_variant=10,
            weights=[0.5, 0.5],
            traffic_fraction=0.0,
            expected_daily_units=10.0,
        ),
        dict(
            sample_size_per_variant=10,
            weights=[0.5, 0.5],
            traffic_fraction=1.5,
            expected_daily_units=10.0,
        ),
        dict(
            sample_size_per_variant=10,
            weights=[0.5, 0.5],
            traffic_fraction=1.0,
            expected_daily_units=0.0,
        ),
        dict(
            sample_size_per_variant=10,
            weights=[0.5, 0.5],
            traffic_fraction=1.0,
            expected_daily_units=10.0,
            minimum_days=0,
        ),
    ],
)
def test_planned_duration_rejects_invalid_inputs(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        planned_duration_days(**kwargs)


def test_mde_rejects_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="sample_size_per_variant"):
        minimum_detectable_effect(
            metric_type="binomial", sample_size_per_variant=0, baseline_rate=0.1
        )
    with pytest.raises(ValueError, match="alpha"):
        minimum_detectable_effect(
            metric_type="binomial", sample_size_per_variant=10, baseline_rate=0.1, alpha=2.0
        )


def test_progress_is_the_smallest_arm_over_the_requirement() -> None:
    assert progress(units_per_variant=[500, 250], sample_size_per_variant=1000) == 0.25
    with pytest.raises(ValueError):
        progress(units_per_variant=[], sample_size_per_variant=1000)
    with pytest.raises(ValueError):
        progress(units_per_variant=[-1, 3], sample_size_per_variant=1000)
