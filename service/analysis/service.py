"""Results of an experiment (``product.md`` §6): aggregation in SQL, statistics in ``stats``, and
the recommendation.

Public entry point: :func:`compute_results` (the report half calls it too).

Multiple testing follows §6 to the letter (``stats.analyze`` does it): the family is every
(primary or secondary metric × treatment) comparison and the p-values adjusted are those of the
*absolute* tests — on a fixed design the Welch p-value of the unadjusted difference (not the CUPED
one), on a sequential design the always-valid p-value of the absolute difference; guardrails stay
outside the family.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

import stats
from service.analysis.aggregate import (
    Aggregator,
    ExposureCounts,
    MetricSpec,
    MetricSums,
    StoreAggregator,
    Window,
    percentile_linear,
)
from service.analysis.looks import look_fractions
from service.analysis.models import (
    ComparisonPublic,
    DecisionPublic,
    GroupSequentialDesignPublic,
    MetricResultPublic,
    PowerPublic,
    ResultsPublic,
    SrmPublic,
)
from service.db import utcnow
from service.experiments.models import MAX_WINDOW_HOURS, Baseline, Experiment, Status
from service.experiments.plan import sample_size_for
from service.experiments.service import control_of, current_phase, get_row
from service.metrics.models import Metric

__all__ = [
    "AnalysisData",
    "analyse",
    "analysis_window",
    "compute_results",
    "decide",
    "metric_specs",
    "quantile_ranks_wanted",
]

# Warning codes of the whole result (metric-level codes come from stats.WARNING_CODES).
NO_EXPOSURES = "no_exposures"
EMPTY_ARM = "empty_arm"
UNKNOWN_VARIANT_EXPOSURES = "unknown_variant_exposures"
METRIC_NOT_FOUND = "metric_not_found"
NO_PLANNED_SAMPLE = "no_planned_sample_size"
SAMPLE_SIZE_ESTIMATED = "sample_size_estimated_from_data"
# method group_sequential without a planned sample size: no horizon, read as a fixed design
GROUP_SEQUENTIAL_NO_HORIZON = "group_sequential_no_horizon"
# Fewest control units from which the baseline is estimated when the protocol gave none.
MIN_UNITS_FOR_BASELINE = 100


def metric_spec(metric: Metric) -> MetricSpec:
    """The aggregation's view of a catalogue metric."""
    return MetricSpec(
        key=metric.key,
        type=metric.type,
        event=metric.event,
        aggregation=metric.aggregation,
        numerator_event=metric.numerator_event,
        denominator_event=metric.denominator_event,
        winsorize_lower=metric.winsorize_lower,
        winsorize_upper=metric.winsorize_upper,
        quantile=metric.quantile,
    )


def _summary(
    spec: MetricSpec, sums: MetricSums | None, cuped: bool
) -> stats.MeanSummary | stats.RatioSummary:
    if sums is None or sums.n == 0:
        if spec.type == "ratio":
            empty = stats.RatioCovariate(*([0.0] * 9)) if cuped else None
            return stats.RatioSummary(0, 0.0, 0.0, 0.0, 0.0, 0.0, empty)
        return stats.MeanSummary(0, 0.0, 0.0, *((0.0, 0.0, 0.0) if cuped else ()))
    s = sums.sums
    if spec.type == "ratio":
        pre = None
        if cuped and "pre_sum_num" in s:
            pre = stats.RatioCovariate(*(s[f"pre_{f}"] for f in stats.RatioCovariate.__slots__))
        return stats.RatioSummary(
            sums.n, s["sum_num"], s["sum_den"], s["sum_num2"], s["sum_den2"], s["sum_num_den"], pre
        )
    if cuped:
        return stats.MeanSummary(
            sums.n, s["sum_x"], s["sum_x2"], s["sum_pre"], s["sum_pre2"], s["sum_x_pre"]
        )
    return stats.MeanSummary(sums.n, s["sum_x"], s["sum_x2"])


def quantile_ranks_wanted(
    specs: Sequence[MetricSpec], units: dict[str, int], alpha: float
) -> dict[str, dict[str, tuple[int, ...]]]:
    """``{variant: {metric key: ranks}}``: the order statistics a quantile metric's analysis
    reads per arm (``stats.quantile_ranks``: the two around the quantile, the interval's ends)."""
    wanted: dict[str, dict[str, tuple[int, ...]]] = {}
    for spec in specs:
        for v, n in units.items():
            if n > 0:
                r = stats.quantile_ranks(n, float(spec.quantile or 0.5), alpha=alpha)
                picks = (r.point, min(r.point + 1, r.n), r.lower, r.upper)
                wanted.setdefault(v, {})[spec.key] = picks
    return wanted


def _quantile_summaries(
    source: Aggregator,
    specs: list[MetricSpec],
    window: Window,
    units: dict[str, int],
    alpha: float,
    order_statistics: dict[str, dict[str, dict[int, float]]] | None = None,
) -> dict[str, dict[str, stats.QuantileSummary]]:
    """Per quantile metric and variant: the arm's quantile and interval ends, from the order
    statistics the database returns (:func:`quantile_ranks_wanted` says which), or from
    ``order_statistics`` read earlier (a slice's, ``Aggregator.slice_order_statistics``)."""
    got = order_statistics
    if got is None:
        wanted = quantile_ranks_wanted(specs, units, alpha)
        got = source.quantile_order_statistics(specs, window, wanted) if wanted else {}
    out: dict[str, dict[str, stats.QuantileSummary]] = {}
    for spec in specs:
        q = float(spec.quantile or 0.5)
        out[spec.key] = {}
        for v, n in units.items():
            values = got.get(spec.key, {}).get(v, {})
            if n == 0 or not values:
                nan = float("nan")
                out[spec.key][v] = stats.QuantileSummary(0, q, nan, nan, nan, alpha)
                continue
            rk = stats.quantile_ranks(n, q, alpha=alpha)
            upper_point = values.get(rk.point + 1) if rk.point < rk.n else None
            estimate = percentile_linear(values[rk.point], upper_point, q * (n - 1))
            out[spec.key][v] = stats.QuantileSummary(
                n, q, estimate, values[rk.lower], values[rk.upper], alpha
            )
    return out


def _protocol_metrics(exp: Experiment) -> list[tuple[str, str, float | None]]:
    """(metric key, role, guardrail margin) in protocol order."""
    out: list[tuple[str, str, float | None]] = [(exp.primary_metric, "primary", None)]
    out += [(key, "secondary", None) for key in exp.secondary_metrics]
    out += [(g["metric"], "guardrail", float(g["margin"])) for g in exp.guardrails]
    return out


def _estimated_sample_size(
    exp: Experiment, primary: MetricResultPublic, control: str
) -> tuple[int | None, dict[str, float] | None]:
    """Sample size from the control arm's data when the protocol gave no baseline (§2: the
    baseline "may be estimated from data already ingested"). None until the control arm has
    MIN_UNITS_FOR_BASELINE units and a usable mean and spread."""
    arm = next((v for v in primary.variants if v.variant == control), None)
    if arm is None or arm.units < MIN_UNITS_FOR_BASELINE or arm.mean is None or arm.sd is None:
        return None, None
    baseline = (
        {"rate": arm.mean} if primary.type == "binomial" else {"mean": arm.mean, "sd": arm.sd}
    )
    try:
        n = sample_size_for(exp, primary.type, Baseline.model_validate(baseline))
    except ValueError:  # a rate of 0 or 1, a zero mean or sd: nothing to plan with yet
        return None, None
    return n, baseline


def _fmt_p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.3g}"


def _look_note(c: ComparisonPublic) -> str:
    gs = c.group_sequential
    assert gs is not None
    return (
        f"the efficacy bound of look {gs.look} (information fraction "
        f"{gs.information_fraction:.0%}, adjusted α {gs.nominal_alpha:.3g}) is crossed: the "
        "group sequential design allows stopping early for efficacy"
    )


def decide(
    *,
    status: str,
    sequential: bool,
    srm: SrmPublic,
    metrics: Sequence[MetricResultPublic],
    power: PowerPublic,
    group_sequential: bool = False,
) -> DecisionPublic:
    """The recommendation and its reasons (rules in the order they take precedence).

    1. ``invalid`` when the SRM check fails.
    2. ``roll_back`` when a guardrail fails or the primary metric is significantly worse.
    3. ``ship`` the best significantly better treatment on the primary metric, when no guardrail
       fails and — on a fixed design — every arm reached the planned sample size (a group
       sequential design may stop early: significant there means the look's efficacy bound is
       crossed).
    4. ``keep_running`` while that sample is not reached (or nothing is significant yet).
    5. ``inconclusive`` once the sample is reached or the experiment is stopped without a
       significant primary result (a fixed-design experiment stopped before its planned sample
       is inconclusive too: its early significance is not a valid result).
    """
    if srm.mismatch:
        observed = ", ".join(f"{k}: {v}" for k, v in srm.observed.items())
        expected = ", ".join(f"{k}: {v:g}" for k, v in srm.expected.items())
        return DecisionPublic(
            recommendation="invalid",
            reasons=[
                f"Sample ratio mismatch: units per variant ({observed}) do not match the "
                f"configured weights ({expected}); p = {_fmt_p(srm.p_value)} < "
                f"{srm.threshold:g}. The assignment or exposure logging is broken; the results "
                "cannot be trusted."
            ],
        )
    reasons: list[str] = []
    for m in metrics:
        if m.role != "guardrail":
            continue
        for c in m.comparisons:
            if c.guardrail is not None and c.guardrail.status == "fail":
                harm = c.guardrail.harm
                reasons.append(
                    f"Guardrail '{m.metric}' fails for '{c.variant}': estimated relative harm "
                    f"{'n/a' if harm is None else f'{harm:.2%}'} significantly exceeds the "
                    f"tolerated {c.guardrail.margin:.2%}."
                )
    primary = next((m for m in metrics if m.role == "primary"), None)
    better: list[ComparisonPublic] = []
    if primary is not None:
        sign = 1.0 if primary.higher_is_better else -1.0
        for c in primary.comparisons:
            est = c.absolute.estimate
            if not c.significant or est is None or est == 0.0:
                continue
            rel = c.relative.estimate
            lift = "n/a" if rel is None else f"{rel:+.2%}"
            if sign * est < 0:
                reasons.append(
                    f"Primary metric '{primary.metric}' is significantly worse for "
                    f"'{c.variant}' (relative lift {lift}, adjusted p = "
                    f"{_fmt_p(c.p_value_adjusted)})."
                )
            else:
                better.append(c)
    if reasons:
        return DecisionPublic(recommendation="roll_back", reasons=reasons)
    assert primary is not None or not better
    stopped = status in (Status.stopped.value, Status.concluded.value)
    needed = power.sample_size_per_variant
    reached = power.progress is not None and power.progress >= 1.0
    sample_note = (
        f"the planned sample ({needed} units per variant) is reached in every arm"
        if reached
        else (
            "no planned sample size is recorded (give the protocol a baseline)"
            if needed is None
            else f"the planned sample ({needed} units per variant) is not reached yet: "
            f"the smallest arm has {power.units_so_far} units "
            f"({0.0 if power.progress is None else power.progress:.0%})"
        )
    )
    if better and primary is not None:
        sign = 1.0 if primary.higher_is_better else -1.0
        best = max(better, key=lambda c: sign * (c.absolute.estimate or 0.0))
        rel = best.relative.estimate
        lift = "n/a" if rel is None else f"{rel:+.2%}"
        found = (
            f"Primary metric '{primary.metric}' is significantly better for '{best.variant}' "
            f"(relative lift {lift}, adjusted p = {_fmt_p(best.p_value_adjusted)})"
        )
        if len(better) > 1:
            found += f"; best of {len(better)} significant treatments"
        if sequential or group_sequential or reached:
            design = (
                "always-valid (sequential) inference allows stopping now"
                if sequential
                else (
                    _look_note(best)
                    if group_sequential and best.group_sequential is not None
                    else sample_note
                )
            )
            return DecisionPublic(
                recommendation="ship",
                variant=best.variant,
                reasons=[f"{found}.", "No guardrail fails.", f"On this design {design}."],
            )
        if stopped:
            return DecisionPublic(
                recommendation="inconclusive",
                reasons=[
                    f"{found}, but the experiment stopped before the planned sample; "
                    f"{sample_note}. A fixed-design test read early is not a valid result."
                ],
            )
        return DecisionPublic(
            recommendation="keep_running",
            reasons=[f"{found}, but on a fixed design {sample_note}."],
        )
    nothing = (
        "No primary comparison is significant"
        if primary is not None
        else "The primary metric could not be analysed"
    )
    if reached or stopped:
        why = sample_note if reached else "the experiment is stopped"
        return DecisionPublic(
            recommendation="inconclusive",
            reasons=[f"{nothing}, and {why}.", "No guardrail fails."],
        )
    return DecisionPublic(
        recommendation="keep_running",
        reasons=[f"{nothing} yet, and {sample_note}."],
    )


@dataclass
class AnalysisData:
    """The sufficient statistics a result is computed from: with the experiment's definition,
    everything :func:`analyse` needs, without the events (stored in snapshots)."""

    counts: ExposureCounts
    sums: dict[str, dict[str, MetricSums]]
    # Quantile metrics' order statistics read with the sums ({metric key: {variant: {rank:
    # value}}}, a slice's); None: read from the events (a snapshot stores none).
    order_statistics: dict[str, dict[str, dict[int, float]]] | None = None


def compute_results(session: Session, experiment_key: str) -> ResultsPublic:
    """Analyse the current phase of an experiment (see :func:`analyse`)."""
    return analyse(session, experiment_key)[0]


def metric_specs(session: Session, exp: Experiment) -> list[MetricSpec]:
    """The protocol's metrics found in the catalogue, in protocol order."""
    protocol = _protocol_metrics(exp)
    rows = session.exec(
        select(Metric).where(col(Metric.key).in_([key for key, _, _ in protocol]))
    ).all()
    catalogue = {m.key: m for m in rows}
    return [metric_spec(catalogue[key]) for key, _, _ in protocol if key in catalogue]


def analysis_window(session: Session, exp: Experiment, until: datetime | None = None) -> Window:
    """The window every unit of the experiment's current phase is analysed in."""
    assert exp.id is not None
    settings = exp.analysis or {}
    cuped = bool(settings.get("cuped", True))
    return Window(
        experiment_id=exp.id,
        phase=exp.phase,
        overrides=sorted(exp.overrides or {}),
        # A row stored before the protocol's range (a window of 1e100 h) is read as the longest
        # window the protocol takes now, instead of overflowing the time arithmetic.
        attribution_window_hours=None
        if exp.attribution_window_hours is None
        else min(exp.attribution_window_hours, MAX_WINDOW_HOURS),
        stopped_at=exp.stopped_at,
        pre_period_days=int(settings.get("pre_period_days", 14)) if cuped else None,
        until=until,
    )


def analyse(
    session: Session,
    experiment_key: str,
    *,
    until: datetime | None = None,
    data: AnalysisData | None = None,
    source: Aggregator | None = None,
) -> tuple[ResultsPublic, AnalysisData]:
    """Analyse the current phase of an experiment.

    Parameters
    ----------
    session : Session
        An open session; only reads (a deferred transaction is enough).
    experiment_key : str
        The experiment's key.
    until : datetime or None
        Cut the data there (exclusive): units first exposed and events before it only.
    data : AnalysisData or None
        Sufficient statistics computed earlier: analyse them instead of the events.
    source : Aggregator or None
        Where the events are aggregated: the experiment's data source (§13); None: the
        built-in store read in ``session``.

    Returns
    -------
    tuple[ResultsPublic, AnalysisData]
        The §6 results contract: SRM, exclusions, every protocol metric with its comparisons,
        power progress and the decision; and the sufficient statistics it came from.

    Raises
    ------
    NotFoundError
        When no experiment has that key.
    """
    exp = get_row(session, experiment_key)
    assert exp.id is not None
    phase = current_phase(session, exp)
    variants = phase.variants if phase is not None else exp.variants
    control = control_of(variants)
    weights = {str(v["key"]): float(v["weight"]) for v in variants}
    settings = exp.analysis or {}
    cuped = bool(settings.get("cuped", True))
    sequential = settings.get("method", "fixed") == "sequential"
    group_sequential = settings.get("method", "fixed") == "group_sequential"
    correction = settings.get("correction", "holm")
    warnings: list[str] = []

    protocol = _protocol_metrics(exp)
    rows = session.exec(
        select(Metric).where(col(Metric.key).in_([key for key, _, _ in protocol]))
    ).all()
    catalogue = {m.key: m for m in rows}
    missing = [key for key, _, _ in protocol if key not in catalogue]
    if missing:
        warnings.append(METRIC_NOT_FOUND)
    specs = [metric_spec(catalogue[key]) for key, _, _ in protocol if key in catalogue]

    window = analysis_window(session, exp, until)
    agg = StoreAggregator(session) if source is None else source
    summed = [spec for spec in specs if spec.type != "quantile"]
    early: dict[str, dict[str, MetricSums]] | None = None  # the sums, if read with the counts
    if data is None:
        counts, early = agg.counts_and_sums(summed, window)
    else:
        counts = data.counts
    units = {v: counts.units.get(v, 0) for v in weights}
    if any(v not in weights and n > 0 for v, n in counts.units.items()):
        warnings.append(UNKNOWN_VARIANT_EXPOSURES)
    total = sum(units.values())
    if total == 0:
        warnings.append(NO_EXPOSURES)
    elif any(n == 0 for n in units.values()):
        warnings.append(EMPTY_ARM)
    if data is not None:  # a stored snapshot re-analysed: its sums, not the events
        sums = data.sums
    elif not total:
        sums = {}
    else:
        sums = (
            early
            if early is not None
            else agg.variant_sums(summed, window, total, list(counts.units))
        )
    # quantile metrics read their order statistics from the events (a snapshot stores no sums)
    quantiles = _quantile_summaries(
        agg,
        [spec for spec in specs if spec.type == "quantile"],
        window,
        units,
        exp.alpha,
        None if data is None else data.order_statistics,
    )

    design: stats.GroupSequentialDesign | None = None
    planned = exp.sample_size_per_variant
    if group_sequential and (planned is None or planned < 1):
        warnings.append(GROUP_SEQUENTIAL_NO_HORIZON)
    elif group_sequential and planned is not None:
        fractions = look_fractions(
            session,
            exp.id,
            exp.phase,
            units=min(units.values()) if units else 0,
            planned=planned,
            record=exp.status != Status.draft.value,
        )
        if fractions:
            design = stats.GroupSequentialDesign(
                fractions,
                settings.get("spending", "obrien_fleming"),
                settings.get("rho"),
            )

    inputs = [
        stats.MetricInput(
            key=spec.key,
            type=spec.type,  # type: ignore[arg-type]  # a MetricType value, as str
            role=role,  # type: ignore[arg-type]  # "primary", "secondary" or "guardrail"
            higher_is_better=catalogue[key].higher_is_better,
            guardrail_margin=margin,
            variants={
                v: quantiles[spec.key][v]
                if spec.type == "quantile"
                else _summary(spec, sums.get(spec.key, {}).get(v), cuped)
                for v in weights
            },
        )
        for spec, (key, role, margin) in zip(
            specs, [p for p in protocol if p[0] in catalogue], strict=True
        )
    ]
    result = stats.analyze(
        inputs,
        control=control,
        settings=stats.AnalysisSettings(
            alpha=exp.alpha,
            correction=correction,
            cuped=cuped,
            sequential=sequential,
            n_star=float(settings.get("sequential_n_star", 5000)),
            bayesian=bool(settings.get("bayesian", False)),
            prior_mean=settings.get("prior_mean"),
            prior_sd=settings.get("prior_sd"),
            srm_threshold=float(settings.get("srm_threshold", 0.001)),
            group_sequential=design,
        ),
        srm=stats.SrmInput(units=units, weights=weights),
    ).to_dict()
    metrics = [
        MetricResultPublic.model_validate(
            m
            | {
                "name": catalogue[m["metric"]].name,
                "higher_is_better": catalogue[m["metric"]].higher_is_better,
                "winsorized": spec.winsorized,
            }
        )
        for m, spec in zip(result["metrics"], specs, strict=True)
    ]
    srm = SrmPublic.model_validate(result["srm"])
    gs_public = None
    if design is not None:
        gs_public = GroupSequentialDesignPublic(
            spending=design.spending, rho=design.rho, looks=result["looks"]
        )

    needed = exp.sample_size_per_variant
    baseline = None
    if needed is None and metrics and metrics[0].role == "primary":
        needed, baseline = _estimated_sample_size(exp, metrics[0], control)
    smallest = min(units.values()) if units else 0
    if needed is None:
        warnings.append(NO_PLANNED_SAMPLE)
    elif baseline is not None:
        warnings.append(SAMPLE_SIZE_ESTIMATED)
    power = PowerPublic(
        sample_size_per_variant=needed,
        units_so_far=smallest,
        units_per_variant=units,
        progress=None
        if needed is None or needed < 1
        else stats.progress(units_per_variant=list(units.values()), sample_size_per_variant=needed),
        sample_size_estimated=baseline is not None,
        estimated_baseline=baseline,
    )
    decision = decide(
        status=exp.status,
        sequential=sequential,
        srm=srm,
        metrics=metrics,
        power=power,
        group_sequential=design is not None,
    )
    out = ResultsPublic(
        experiment=exp.key,
        phase=exp.phase,
        status=exp.status,
        computed_at=utcnow(),
        method="sequential" if sequential else ("group_sequential" if design else "fixed"),
        group_sequential=gs_public,
        alpha=exp.alpha,
        correction=correction,
        srm=srm,
        multiple_exposures=counts.multiple_exposures,
        overridden_units=counts.overridden_units,
        units=total,
        metrics=metrics,
        power=power,
        decision=decision,
        warnings=warnings,
    )
    return out, AnalysisData(counts=counts, sums=sums)
