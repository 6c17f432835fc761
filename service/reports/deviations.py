"""Plan vs actual, and the deviations from the protocol, derived from the experiment and its audit.

Pure functions over the typed public models (``ExperimentPublic``, its ``AuditEntryOut`` entries
and ``ResultsPublic`` of product.md §6), so that they are tested without a database.

Deviations found:

- ``early_stop`` — the experiment was stopped before the planned sample (the smallest arm below
  ``sample_size_per_variant``) or before the planned duration. On a sequential design this is
  allowed and not reported.
- ``peeking`` — on a fixed design, results were looked at before the planned sample: either the
  audit trail records result views (actions in :data:`VIEW_ACTIONS`) before the planned end date,
  or the experiment was stopped early, which means someone acted on an interim look. A fixed
  design's α holds only for one look at the planned sample.
- ``metrics_added_after_start`` — an ``update`` in the audit trail after the start changed the
  primary metric, the secondary metrics or the guardrails (the metrics named were not
  pre-registered).
- ``new_phase`` — a new phase (new variants, weights or traffic) was started; only the current
  phase is analysed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from service.analysis.models import ResultsPublic
from service.experiments.models import AuditEntryOut, ExperimentPublic

# Audit actions that mean "someone looked at the results" (recorded by the analysis domain if
# it logs views; the report works without them).
VIEW_ACTIONS = frozenset({"results_viewed", "report_viewed", "analysis_viewed", "results"})
METRIC_FIELDS = ("primary_metric", "secondary_metrics", "guardrails")


@dataclass(frozen=True)
class Deviation:
    """One departure from the pre-registered protocol."""

    code: str
    title: str
    detail: str


@dataclass(frozen=True)
class Plan:
    """Planned vs actual sample size (per variant) and duration (days)."""

    planned_per_variant: int | None
    actual_per_variant: dict[str, int] = field(default_factory=dict)
    planned_days: int | None = None
    actual_days: float | None = None
    sample_reached: bool | None = None
    duration_reached: bool | None = None
    planned_end: datetime | None = None


def aware(value: datetime | None) -> datetime | None:
    """``value`` as an aware datetime (a naive one, as SQLite gives back, is UTC)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def analysed_start(experiment: ExperimentPublic) -> datetime | None:
    """When the analysed (current) phase started; the experiment start for phase 1."""
    for phase in experiment.phases:
        if phase.phase == experiment.phase and phase.started_at is not None:
            return aware(phase.started_at)
    return aware(experiment.started_at)


def plan_vs_actual(
    experiment: ExperimentPublic, results: ResultsPublic | None, now: datetime
) -> Plan:
    """Planned sample and duration against what the data and the clock show.

    Parameters
    ----------
    experiment : ExperimentPublic
        The experiment.
    results : ResultsPublic or None
        Its results (units per variant come from ``srm.observed``).
    now : datetime
        The current time (the end of the run while it is not stopped).

    Returns
    -------
    Plan
        ``None`` fields where the protocol or the data do not say.
    """
    planned = experiment.sample_size_per_variant
    observed = dict(results.srm.observed) if results is not None else {}
    start = analysed_start(experiment)
    end = aware(experiment.stopped_at) or now
    days = (end - start).total_seconds() / 86_400 if start is not None else None
    planned_days = experiment.planned_duration_days
    sample_reached = None
    if planned is not None and observed:
        sample_reached = min(observed.values()) >= planned
    duration_reached = None
    planned_end = None
    if planned_days is not None and start is not None and days is not None:
        duration_reached = days >= planned_days
        planned_end = start + timedelta(days=planned_days)
    return Plan(
        planned_per_variant=planned,
        actual_per_variant=observed,
        planned_days=planned_days,
        actual_days=days,
        sample_reached=sample_reached,
        duration_reached=duration_reached,
        planned_end=planned_end,
    )


def _early(plan: Plan) -> list[str]:
    why = []
    if plan.sample_reached is False and plan.planned_per_variant:
        smallest = min(plan.actual_per_variant.values())
        why.append(
            f"the smallest arm had {smallest:,} of the {plan.planned_per_variant:,} planned units "
            f"({smallest / plan.planned_per_variant:.0%})"
        )
    if plan.duration_reached is False and plan.actual_days is not None:
        why.append(f"it ran {plan.actual_days:.1f} of the {plan.planned_days} planned days")
    return why


def _metric_keys(field_name: str, value: Any) -> set[str]:
    """The metric keys of a metric field's JSON as the audit trail recorded it before a change."""
    if value is None:
        return set()
    if field_name == "primary_metric":
        return {str(value["metric"])} if isinstance(value, dict) else {str(value)}
    if field_name == "guardrails":
        return {str(g["metric"]) if isinstance(g, dict) else str(g) for g in value}
    return {str(v) for v in value}


def _current_metric_keys(experiment: ExperimentPublic, field_name: str) -> set[str]:
    if field_name == "primary_metric":
        return {experiment.primary_metric.metric}
    if field_name == "guardrails":
        return {g.metric for g in experiment.guardrails}
    return set(experiment.secondary_metrics)


def find_deviations(
    experiment: ExperimentPublic,
    audit: Sequence[AuditEntryOut],
    results: ResultsPublic | None,
    now: datetime,
) -> list[Deviation]:
    """Every deviation from the protocol, in the order of the module docstring.

    Parameters
    ----------
    experiment : ExperimentPublic
        The experiment.
    audit : sequence of AuditEntryOut
        Its audit entries, oldest first.
    results : ResultsPublic or None
        Its results, or ``None`` when not available.
    now : datetime
        The current time, aware.

    Returns
    -------
    list of Deviation
    """
    out: list[Deviation] = []
    method = experiment.analysis.method
    plan = plan_vs_actual(experiment, results, now)
    stopped = aware(experiment.stopped_at)
    early_why = _early(plan) if stopped is not None else []
    if early_why and method == "fixed":
        out.append(
            Deviation(
                "early_stop",
                "Stopped before the planned sample or duration",
                f"Stopped on {stopped:%Y-%m-%d %H:%M} UTC: " + "; ".join(early_why) + ".",
            )
        )
    if method == "fixed":
        evidence = []
        views = [
            a
            for a in audit
            if a.action in VIEW_ACTIONS
            and (t := aware(a.at)) is not None
            and (plan.planned_end is None or t < plan.planned_end)
            and (stopped is None or t <= stopped)
        ]
        if views and plan.planned_end is not None:
            evidence.append(
                f"results were viewed {len(views)} time(s) before the planned end "
                f"({plan.planned_end:%Y-%m-%d})"
            )
        if early_why:
            evidence.append(
                "the experiment was stopped before the planned sample, i.e. on an interim look"
            )
        if evidence:
            out.append(
                Deviation(
                    "peeking",
                    "Peeking on a fixed design",
                    "A fixed-horizon test keeps its α only for one look at the planned sample; "
                    + "; ".join(evidence)
                    + ". Treat p-values and intervals as optimistic, or use `method: sequential`.",
                )
            )
    start = aware(experiment.started_at)
    if start is not None:
        for entry in audit:
            at = aware(entry.at)
            details = entry.details or {}
            fields = [f for f in details.get("fields") or [] if f in METRIC_FIELDS]
            if entry.action != "update" or at is None or at <= start or not fields:
                continue
            before = details.get("before") or {}
            for f in fields:
                added = sorted(_current_metric_keys(experiment, f) - _metric_keys(f, before.get(f)))
                label = f.replace("_", " ")
                out.append(
                    Deviation(
                        "metrics_added_after_start",
                        "Metrics added after the start",
                        f"On {at:%Y-%m-%d %H:%M} UTC {entry.actor or 'someone'} changed the "
                        f"{label}"
                        + (f", adding {', '.join(added)}" if added else "")
                        + ": these were not pre-registered; read them as exploratory.",
                    )
                )
    for entry in audit:
        if entry.action != "new_phase":
            continue
        at = aware(entry.at)
        details = entry.details or {}
        when = f"{at:%Y-%m-%d %H:%M} UTC"
        out.append(
            Deviation(
                "new_phase",
                f"New phase {details.get('phase', '?')}",
                f"Started {when}"
                + (f" ({entry.note})" if entry.note else "")
                + ": units were re-randomized and only the current phase is analysed.",
            )
        )
    return out


def progress_fraction(results: ResultsPublic | None) -> float | None:
    """``power.progress`` from the results, when it is a finite number."""
    if results is None:
        return None
    value = results.power.progress
    return value if value is not None and math.isfinite(value) else None
