"""An experiment's plan: units per variant and planned duration from its protocol (stats.power)."""

from __future__ import annotations

from service.errors import (
    FieldError,
    ValidationFailedError,
)
from service.experiments.models import (
    Baseline,
    BaselineOut,
    Experiment,
    ProtocolWarning,
)
from service.metrics.models import Metric
from stats.power import planned_duration_days, sample_size_per_variant

# The largest plan a protocol may hold: units per variant (the column is a 32-bit integer on
# PostgreSQL; 1e9 is more than every person online in one arm) and days (ten years).
MAX_SAMPLE_SIZE = 1_000_000_000
MAX_PLANNED_DAYS = 3650


def _weights_control_first(exp: Experiment) -> list[float]:
    ordered = sorted(exp.variants, key=lambda v: not v.get("is_control"))
    return [float(v["weight"]) for v in ordered]


def sample_size_for(exp: Experiment, metric_type: str, baseline: Baseline) -> int:
    """Units per variant the protocol needs for its primary metric, from a baseline.

    Raises ``ValueError`` when the baseline cannot support the plan (see ``stats.power``).
    """
    return sample_size_per_variant(
        metric_type=metric_type,  # type: ignore[arg-type]  # str of a Metric: one of the literals
        mde=exp.primary_mde,
        alpha=exp.alpha,
        power=exp.power,
        baseline_rate=baseline.rate,
        baseline_mean=baseline.mean,
        baseline_sd=baseline.sd,
        weights=_weights_control_first(exp),
    )


def compute_plan(exp: Experiment, primary: Metric | None) -> tuple[int | None, int | None]:
    """Sample size per variant and planned duration from the protocol (None when unknown).

    Raises a 422 when the engine cannot plan it, or when the plan is beyond any real
    experiment (more than ``MAX_SAMPLE_SIZE`` units per variant, or ``MAX_PLANNED_DAYS``).
    """
    if primary is None or exp.baseline is None:
        return None, None
    baseline = BaselineOut.model_validate(exp.baseline)
    try:
        n = sample_size_per_variant(
            metric_type=primary.type,  # type: ignore[arg-type]  # a MetricType value, as str
            mde=exp.primary_mde,
            alpha=exp.alpha,
            power=exp.power,
            baseline_rate=baseline.rate,
            baseline_mean=baseline.mean,
            baseline_sd=baseline.sd,
            weights=_weights_control_first(exp),
        )
    except (ValueError, OverflowError, ZeroDivisionError) as exc:
        raise ValidationFailedError.on(
            "primary_metric.mde", f"the plan cannot be computed: {exc}"
        ) from exc
    if n > MAX_SAMPLE_SIZE:
        raise ValidationFailedError.on(
            "primary_metric.mde",
            f"detecting a {exp.primary_mde:g} relative effect needs {n:.3g} units per variant, "
            f"more than the {MAX_SAMPLE_SIZE:.0e} a plan can hold: raise the mde, or give the "
            "baseline of a more frequent metric",
        )
    days = None
    if exp.expected_daily_units is not None:
        try:
            days = planned_duration_days(
                sample_size_per_variant=n,
                weights=_weights_control_first(exp),
                traffic_fraction=exp.traffic_fraction,
                expected_daily_units=exp.expected_daily_units,
            )
        except (ValueError, OverflowError) as exc:
            raise ValidationFailedError.on(
                "expected_daily_units", f"the planned duration cannot be computed: {exc}"
            ) from exc
        if days > MAX_PLANNED_DAYS:
            raise ValidationFailedError.on(
                "expected_daily_units",
                f"the plan takes {days} days, more than {MAX_PLANNED_DAYS} (ten years): raise "
                "expected_daily_units or traffic_fraction, or a larger mde needs fewer units",
            )
    return n, days


def plan_into(
    exp: Experiment, primary: Metric | None, problems: list[FieldError]
) -> list[FieldError]:
    """Set the row's plan; its 422 as errors to report with the others. A protocol whose other
    rules fail is not planned (a plan from an inconsistent protocol would only add noise)."""
    if problems:
        return []
    try:
        exp.sample_size_per_variant, exp.planned_duration_days = compute_plan(exp, primary)
    except ValidationFailedError as exc:
        return list(exc.errors or [])
    return []


def plan_warnings(exp: Experiment) -> list[ProtocolWarning]:
    """What the protocol leaves open: shown with it, so that a null is never silent."""
    if exp.baseline is None:
        return [
            ProtocolWarning(
                code="no_baseline",
                message="the protocol has no `baseline` for its primary metric, so "
                "sample_size_per_variant and planned_duration_days are null: the results "
                "estimate the sample size from the control's data once it arrives "
                "(`sample_size_estimated`), or PATCH a baseline now (`rate` for a binomial "
                "metric, `mean` and `sd` otherwise) to plan before start",
            )
        ]
    if exp.sample_size_per_variant is not None and exp.expected_daily_units is None:
        return [
            ProtocolWarning(
                code="no_expected_daily_units",
                message="planned_duration_days is null: give `expected_daily_units` (units "
                "entering the experiment a day) to plan the duration",
            )
        ]
    return []
