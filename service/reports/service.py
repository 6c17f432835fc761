"""Gather what a report shows: the protocol, the audit trail, the catalogue, the results, the
template version and the alerts; and what the index page shows, with the portfolio insights.

The numbers come from :func:`service.analysis.service.compute_results` (the §6 contract); this
module only reads. Drafts and archived experiments have no data, so no analysis runs for them.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlmodel import Session, col, select

from service.alerts.service import list_alerts
from service.db import utcnow
from service.errors import AppError
from service.experiments.models import Experiment, Status
from service.experiments.service import get_row, list_audit, to_public
from service.insights.service import compute_insights
from service.metrics.models import Metric
from service.reports.deviations import find_deviations, plan_vs_actual, progress_fraction
from service.reports.render import IndexRow, ReportContext
from service.snapshots.service import results_dict
from service.templates.service import get_template

log = logging.getLogger("trialbook.reports")

NO_DATA_STATUSES = frozenset({Status.draft.value, Status.archived.value})


def _results(session: Session, exp: Experiment) -> tuple[dict[str, Any] | None, str | None]:
    if exp.status in NO_DATA_STATUSES:
        return None, f"No results: the experiment is {exp.status} and has not collected data."
    try:
        return results_dict(session, exp), None  # the latest snapshot (service.snapshots)
    except AppError as exc:  # a data condition the analysis refuses: say it, do not fail
        return None, f"Results unavailable: {exc.detail}"


def build_context(session: Session, key: str) -> ReportContext:
    """Everything the report of experiment ``key`` shows.

    Parameters
    ----------
    session : Session
        A read session.
    key : str
        The experiment key.

    Returns
    -------
    ReportContext

    Raises
    ------
    NotFoundError
        When no experiment has that key.
    """
    exp = get_row(session, key)
    public = to_public(session, exp).model_dump(mode="json")
    wanted = [
        exp.primary_metric,
        *exp.secondary_metrics,
        *(str(g["metric"]) for g in exp.guardrails),
    ]
    metrics = {
        m.key: m.model_dump(mode="json", exclude={"id"})
        for m in session.exec(select(Metric).where(col(Metric.key).in_(wanted))).all()
    }
    audit = [a.model_dump(mode="json") for a in list_audit(session, key)]
    results, note = _results(session, exp)
    now = utcnow()
    return ReportContext(
        alerts=[a.model_dump(mode="json") for a in list_alerts(session, exp.key)],
        template=_template_of(session, exp),
        experiment=public,
        metrics=metrics,
        results=results,
        results_note=note,
        deviations=find_deviations(public, audit, results, now),
        plan=plan_vs_actual(public, results, now),
        generated_at=now,
        audit=audit,
    )


def _template_of(session: Session, exp: Experiment) -> dict[str, Any] | None:
    """The template version the experiment was registered under, as JSON (None without one)."""
    if exp.template is None or exp.template_version is None:
        return None
    try:
        return get_template(session, exp.template, exp.template_version).model_dump(mode="json")
    except AppError:  # the version is gone: the report still names it from the experiment
        return None


def index_insights(session: Session) -> tuple[dict[str, Any] | None, str | None]:
    """The portfolio insights for the index page, or None and why."""
    try:
        return compute_insights(session).model_dump(mode="json"), None
    except Exception:  # the experiment list must still show
        log.exception("portfolio insights failed on the index page")
        session.rollback()  # PostgreSQL refuses further queries in a failed transaction
        return None, "Insights are unavailable right now (see the service log)."


def index_rows(session: Session, limit: int = 200) -> list[IndexRow]:
    """One row per experiment (newest first, at most ``limit``) with its health and recommendation.

    An experiment whose analysis fails is listed without health rather than hiding the others.
    """
    exps = session.exec(
        select(Experiment)
        .order_by(col(Experiment.created_at).desc(), col(Experiment.id).desc())
        .limit(limit)
    ).all()
    open_alerts: dict[str, list[str]] = {}
    for alert in reversed(list_alerts(session)):  # oldest first within each experiment
        if alert.resolved_at is None:
            open_alerts.setdefault(alert.experiment, []).append(alert.type.value)
    rows = []
    for exp in exps:
        results: dict[str, Any] | None = None
        if exp.status not in NO_DATA_STATUSES:
            try:
                results = results_dict(session, exp)
            except Exception:  # one broken experiment must not hide the portfolio
                log.exception("results of %s failed on the index page", exp.key)
                session.rollback()  # PostgreSQL refuses further queries in a failed transaction
        srm = (results or {}).get("srm") or {}
        decision = (results or {}).get("decision") or {}
        rows.append(
            IndexRow(
                key=exp.key,
                title=exp.title,
                owner=exp.owner,
                status=exp.status,
                srm=("mismatch" if srm.get("mismatch") else "ok") if "mismatch" in srm else "",
                multiple_exposures=(results or {}).get("multiple_exposures"),
                recommendation=decision.get("recommendation"),
                progress=progress_fraction(results),
                open_alerts=tuple(open_alerts.get(exp.key, ())),
            )
        )
    return rows
