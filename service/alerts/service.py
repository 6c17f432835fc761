"""Health checks of running experiments, raised once per condition, and the in-process scheduler.

Each check re-analyses a running experiment (``service.analysis.service.compute_results``) and
looks at its exposures:

- ``srm`` — the sample-ratio-mismatch test flags a mismatch;
- ``guardrail_failed`` — a guardrail comparison is ``fail`` (one alert per metric × variant);
- ``decision_ready`` — the planned sample is reached (``power.progress`` ≥ 1);
- ``overdue`` — running past ``planned_duration_days`` since the start;
- ``stalled`` — no exposure received for ``stalled_after_hours`` while running;
- ``interaction`` — two running experiments that share units interact on one's primary metric
  (``service/alerts/interactions.py``; the check report lists every overlap checked).

An alert is keyed by (experiment, phase, type, condition) with a unique constraint, and inserted
with ``INSERT … ON CONFLICT DO NOTHING``: several schedulers (service processes, ``trialbook
check`` from cron) may look at once, and exactly one row — and one webhook — results.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from service.alerts.findings import Finding, raise_alert
from service.alerts.interactions import check_interactions
from service.alerts.models import (
    Alert,
    AlertList,
    AlertPublic,
    AlertType,
    CheckedExperiment,
    CheckReport,
)
from service.analysis.models import ResultsPublic
from service.auth import Principal
from service.config import get_settings
from service.db import open_session, utcnow
from service.errors import ConflictError, NotFoundError
from service.experiments import service as experiments
from service.experiments.models import AuditEntry, Experiment, Status
from service.periodic import PeriodicTask

log = logging.getLogger("trialbook.alerts")


# ------------------------------------------------------------------------------------ the rules


def findings_from_results(results: ResultsPublic) -> list[Finding]:
    """The result-based conditions (SRM, guardrail fail, decision ready) in a §6 results object."""
    out: list[Finding] = []
    srm = results.srm
    if srm.mismatch:
        out.append(
            Finding(
                AlertType.srm,
                f"Sample ratio mismatch: units per variant {srm.observed} do not fit the "
                f"weights {srm.expected} (p = {srm.p_value:.3g}); the results are "
                "not trustworthy until the cause is found.",
                details={"p_value": srm.p_value, "observed": srm.observed},
            )
        )
    for metric in results.metrics:
        if metric.role != "guardrail":
            continue
        for comp in metric.comparisons:
            guard = comp.guardrail
            if guard is None or guard.status != "fail":
                continue
            out.append(
                Finding(
                    AlertType.guardrail_failed,
                    f"Guardrail '{metric.metric}' fails for '{comp.variant}': significant "
                    f"harm beyond the margin {guard.margin} (relative lift "
                    f"{comp.relative.estimate}).",
                    condition=f"{metric.metric}:{comp.variant}",
                    details={
                        "metric": metric.metric,
                        "variant": comp.variant,
                        "margin": guard.margin,
                        "relative": comp.relative.model_dump(mode="json"),
                    },
                )
            )
    power = results.power
    progress = power.progress
    if progress is not None and progress >= 1.0:
        out.append(
            Finding(
                AlertType.decision_ready,
                f"The planned sample is reached ({power.units_so_far} of "
                f"{power.sample_size_per_variant} units per variant): the experiment can be "
                "stopped and decided.",
                details={
                    "progress": progress,
                    "recommendation": results.decision.recommendation,
                },
            )
        )
    return out


def findings_from_clock(
    exp: Experiment,
    now: datetime,
    stream_reference: datetime | None,
    stalled_after: timedelta,
) -> list[Finding]:
    """Time-based conditions: overdue (past the planned duration) and stalled exposures.

    ``stream_reference`` is the latest of the last received exposure and the moment the current
    phase started (or the experiment was last resumed).
    """
    out: list[Finding] = []
    if exp.started_at is not None and exp.planned_duration_days is not None:
        due = exp.started_at + timedelta(days=exp.planned_duration_days)
        if now > due:
            out.append(
                Finding(
                    AlertType.overdue,
                    f"Running past its planned duration of {exp.planned_duration_days} days "
                    f"(due {due.date().isoformat()}).",
                    details={
                        "planned_duration_days": exp.planned_duration_days,
                        "due": due.isoformat(),
                    },
                )
            )
    if stream_reference is not None and now - stream_reference > stalled_after:
        hours = (now - stream_reference).total_seconds() / 3600
        out.append(
            Finding(
                AlertType.stalled,
                f"No exposure received for {hours:.1f} hours while running: is the SDK still "
                "assigning and logging exposures?",
                # One alert per silence: a stream that resumes and stops again alerts again.
                condition=stream_reference.isoformat(),
                details={"since": stream_reference.isoformat(), "hours": round(hours, 2)},
            )
        )
    return out


# ---------------------------------------------------------------------------- inputs of a check


def _results(session: Session, exp: Experiment) -> ResultsPublic:
    from service.snapshots.service import latest_results

    return latest_results(session, exp)  # the latest snapshot (service.snapshots)


def _last_exposure(session: Session, exp: Experiment) -> datetime | None:
    from service.events.models import Exposure

    value = session.exec(
        select(func.max(Exposure.received_at)).where(
            Exposure.experiment_id == exp.id, Exposure.phase == exp.phase
        )
    ).one()
    if value is not None and value.tzinfo is None:  # aggregate bypasses the column type
        from datetime import UTC

        value = value.replace(tzinfo=UTC)
    return value


def _stream_reference(session: Session, exp: Experiment) -> datetime | None:
    candidates: list[datetime] = []
    phase = experiments.current_phase(session, exp)
    if phase is not None and phase.started_at is not None:
        candidates.append(phase.started_at)
    resumed = session.exec(
        select(AuditEntry.at)
        .where(AuditEntry.experiment_id == exp.id, AuditEntry.action == "resume")
        .order_by(col(AuditEntry.id).desc())
    ).first()
    if resumed is not None:
        candidates.append(resumed)
    last = _last_exposure(session, exp)
    if last is not None:
        candidates.append(last)
    return max(candidates) if candidates else None


# Replaceable inputs (tests use crafted results; the report of each is the §6 contract).
results_provider: Callable[[Session, Experiment], ResultsPublic] = _results


# Warning codes of a comparison that mean the health checks could not judge the metric: reported
# with the check (``CheckedExperiment.warnings``) rather than passed over in silence.
UNJUDGED = frozenset({"non_finite_statistics"})


def unjudged_metrics(results: ResultsPublic) -> list[str]:
    """``metric: code`` for each metric whose comparisons carry a warning of :data:`UNJUDGED`."""
    out: list[str] = []
    for metric in results.metrics:
        for comp in metric.comparisons:
            for code in comp.warnings:
                note = f"{metric.metric}: {code}"
                if code in UNJUDGED and note not in out:
                    out.append(note)
    return out


def findings_for(
    session: Session, exp: Experiment, now: datetime
) -> tuple[list[Finding], str | None, list[str]]:
    """Every condition of one running experiment now (read-only), an analysis error if any, and
    the metrics that could not be judged (:func:`unjudged_metrics`)."""
    error = None
    findings: list[Finding] = []
    warnings: list[str] = []
    try:
        results = results_provider(session, exp)
        findings += findings_from_results(results)
        warnings = unjudged_metrics(results)
    except Exception as exc:  # an analysis failure must not stop the other checks
        log.exception("analysis of %s failed during the health check", exp.key)
        error = f"analysis failed: {type(exc).__name__}: {exc}"[:500]
        session.rollback()
    stalled_after = timedelta(hours=get_settings().stalled_after_hours)
    findings += findings_from_clock(exp, now, _stream_reference(session, exp), stalled_after)
    return findings, error, warnings


def check_experiment(key: str, now: datetime) -> CheckedExperiment | None:
    """Analyse one experiment in a read transaction, then store its new alerts in a short write
    transaction (the analysis does not hold SQLite's write lock). None if it is not running."""
    with open_session() as session:
        exp = session.exec(select(Experiment).where(Experiment.key == key)).first()
        if exp is None or exp.status != Status.running.value:
            return None
        findings, error, warnings = findings_for(session, exp, now)
    with open_session(write=True) as session:
        exp = session.exec(select(Experiment).where(Experiment.key == key)).first()
        if exp is None or exp.status != Status.running.value:
            return None
        raised = [f.type for f in findings if raise_alert(session, exp, f)]
        session.commit()
    return CheckedExperiment(experiment=key, raised=raised, error=error, warnings=warnings)


def run_checks(now: datetime | None = None) -> CheckReport:
    """Check every running experiment, each in its own transactions."""
    now = now or utcnow()
    with open_session() as session:
        keys = session.exec(
            select(Experiment.key)
            .where(Experiment.status == Status.running.value)
            .order_by(col(Experiment.id))
        ).all()
    checked: list[CheckedExperiment] = []
    for key in keys:
        try:
            result = check_experiment(key, now)
        except Exception as exc:
            log.exception("health check of %s failed", key)
            result = CheckedExperiment(experiment=key, raised=[], error=str(exc)[:500])
        if result is not None:
            checked.append(result)
    settings = get_settings()
    try:
        interactions = check_interactions(
            settings.interaction_alpha, settings.interaction_min_units, now
        )
    except Exception:
        log.exception("interaction check failed")
        interactions = []
    return CheckReport(
        checked=len(checked),
        raised=sum(len(c.raised) for c in checked) + sum(i.raised for i in interactions),
        experiments=checked,
        interactions=interactions,
    )


# --------------------------------------------------------------------------------------- reads


def _public(row: Alert) -> AlertPublic:
    return AlertPublic(
        id=row.id or 0,
        experiment=row.experiment_key,
        phase=row.phase,
        type=AlertType(row.type),
        condition=row.condition,
        message=row.message,
        details=row.details,
        created_at=row.created_at,
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
    )


def page_alerts(
    session: Session,
    *,
    experiment_key: str | None = None,
    type_: AlertType | None = None,
    open_: bool | None = None,
    limit: int = 50,
    offset: int = 0,
) -> AlertList:
    """Alerts, newest first, filtered by experiment, type, and open (unresolved) or resolved."""
    conds: list[Any] = []
    if experiment_key is not None:
        conds.append(col(Alert.experiment_key) == experiment_key)
    if type_ is not None:
        conds.append(col(Alert.type) == type_.value)
    if open_ is True:
        conds.append(col(Alert.resolved_at).is_(None))
    elif open_ is False:
        conds.append(col(Alert.resolved_at).is_not(None))
    rows = session.exec(
        select(Alert).where(*conds).order_by(col(Alert.id).desc()).limit(limit).offset(offset)
    ).all()
    total = session.exec(select(func.count()).select_from(Alert).where(*conds)).one()
    return AlertList(items=[_public(r) for r in rows], total=total, limit=limit, offset=offset)


def list_alerts(session: Session, experiment_key: str | None = None) -> list[AlertPublic]:
    """Every alert (of one experiment, or all), newest first — for the report and index page."""
    conds = [] if experiment_key is None else [col(Alert.experiment_key) == experiment_key]
    rows = session.exec(select(Alert).where(*conds).order_by(col(Alert.id).desc())).all()
    return [_public(r) for r in rows]


def resolve_alert(session: Session, alert_id: int, who: Principal) -> AlertPublic:
    row = session.get(Alert, alert_id)
    if row is None:
        raise NotFoundError(f"No alert {alert_id}.")
    if row.resolved_at is not None:
        raise ConflictError(
            f"Alert {alert_id} was already resolved by {row.resolved_by}.", code="already_resolved"
        )
    row.resolved_at = utcnow()
    row.resolved_by = who.actor
    session.add(row)
    session.commit()
    return _public(row)


# ------------------------------------------------------------------------------------ scheduler


def _scheduled_checks() -> None:
    report = run_checks()
    if report.raised:
        log.info("health checks raised %d alert(s)", report.raised)


def health_scheduler(interval: float) -> PeriodicTask:
    """A daemon thread running :func:`run_checks` every ``interval`` seconds."""
    return PeriodicTask("health-checks", interval, _scheduled_checks)
