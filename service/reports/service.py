"""Gather what a report shows, and what the index page lists.

The report reads the experiment, the latest results snapshot (``service.snapshots``: reading
costs nothing once computed), its §12 series, the audit trail, the alerts, the template version
and, for a running experiment, the overlaps the interaction check tests
(``service.alerts.interactions``); :func:`service.reports.view.build_report` turns them into the
view both renderings lay out. Drafts and archived experiments have no data, so no analysis runs
for them. A part that fails (a series still being computed) is said in the report, never a 500.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal, get_args

from sqlmodel import Session, col, select

from service.alerts.interactions import interactions_of
from service.alerts.models import InteractionChecked
from service.alerts.service import list_alerts
from service.analysis.models import ResultsPublic
from service.config import get_settings
from service.db import utcnow
from service.errors import AppError
from service.experiments.models import Experiment, ExperimentPublic, Status, StructuredHypothesisOut
from service.experiments.service import get_row, list_audit, to_public
from service.insights.models import InsightsPublic
from service.insights.service import compute_insights
from service.metrics.models import Metric
from service.metrics.service import to_public as metric_public
from service.reports.deviations import progress_fraction
from service.reports.render import IndexFilters
from service.reports.view import IndexRow, ReportInputs
from service.snapshots.models import TimeseriesPublic
from service.snapshots.service import latest_results, timeseries
from service.templates.models import TemplatePublic
from service.templates.service import get_template

log = logging.getLogger("trialbook.reports")

NO_DATA_STATUSES = frozenset({Status.draft.value, Status.archived.value})
INDEX_LIMIT = 500


def _results(session: Session, exp: Experiment) -> tuple[ResultsPublic | None, str | None]:
    if exp.status in NO_DATA_STATUSES:
        return None, f"No results: the experiment is {exp.status} and has not collected data."
    try:
        return latest_results(session, exp), None
    except AppError as exc:  # a data condition the analysis refuses: say it, do not fail
        return None, f"Results unavailable: {exc.detail}"


def _series(session: Session, exp: Experiment) -> tuple[TimeseriesPublic | None, str | None]:
    if exp.status in NO_DATA_STATUSES:
        return None, "No series: the experiment has not collected data."
    try:
        return timeseries(session, exp.key), None
    except AppError as exc:
        return None, f"The series is unavailable right now: {exc.detail}"


def _overlaps(
    session: Session, exp: Experiment
) -> tuple[list[InteractionChecked] | None, str | None]:
    if exp.status != Status.running.value:
        return None, (
            "The interaction check runs on running experiments; this one is "
            f"{exp.status}, so no overlap is checked now (alerts raised while it ran are in "
            "Health)."
        )
    settings = get_settings()
    try:
        return interactions_of(
            session, exp.key, settings.interaction_alpha, settings.interaction_min_units
        ), None
    except Exception:  # the report must still show
        log.exception("interaction check of %s failed in the report", exp.key)
        session.rollback()
        return None, "The interaction check failed (see the service log)."


def _template_of(session: Session, exp: Experiment) -> TemplatePublic | None:
    if exp.template is None or exp.template_version is None:
        return None
    try:
        return get_template(session, exp.template, exp.template_version)
    except AppError:  # the version is gone: the report still names it from the experiment
        return None


def build_inputs(session: Session, key: str, *, shared: bool = False) -> ReportInputs:
    """Everything the report of experiment ``key`` shows (NotFoundError when there is none)."""
    exp = get_row(session, key)
    public = to_public(session, exp)
    wanted = [
        exp.primary_metric,
        *exp.secondary_metrics,
        *(str(g["metric"]) for g in exp.guardrails),
    ]
    metrics = {
        m.key: metric_public(m)
        for m in session.exec(select(Metric).where(col(Metric.key).in_(wanted))).all()
    }
    results, note = _results(session, exp)
    series, series_note = _series(session, exp) if results is not None else (None, None)
    exp = get_row(session, key)  # the series may have refreshed in its own session
    overlaps, overlaps_note = _overlaps(session, exp)
    return ReportInputs(
        experiment=public,
        metrics=metrics,
        results=results,
        results_note=note,
        generated_at=utcnow(),
        audit=list_audit(session, key),
        alerts=list_alerts(session, key),
        template=_template_of(session, exp),
        timeseries=series,
        timeseries_note=series_note,
        interactions=overlaps,
        interactions_note=overlaps_note,
        shared=shared,
    )


def index_insights(session: Session) -> tuple[InsightsPublic | None, str | None]:
    """The portfolio insights for the index page, or None and why."""
    try:
        return compute_insights(session), None
    except Exception:  # the experiment list must still show
        log.exception("portfolio insights failed on the index page")
        session.rollback()  # PostgreSQL refuses further queries in a failed transaction
        return None, "Insights are unavailable right now (see the service log)."


def _search_text(pub: ExperimentPublic) -> str:
    """What the index search looks through: title, key, hypothesis, recorded decision."""
    parts = [pub.key, pub.title, pub.description or ""]
    h = pub.hypothesis
    if isinstance(h, StructuredHypothesisOut):
        parts += [h.change, h.population, h.expected_outcome, h.rationale]
    else:
        parts.append(h)
    if pub.decision is not None:
        parts += [pub.decision.decision.replace("_", " "), pub.decision.rationale]
    parts += [str(n.get("text", "")) for n in pub.notes if isinstance(n, dict)]
    return " ".join(parts).casefold()


@dataclass(frozen=True)
class IndexPage:
    rows: list[IndexRow]
    total: int
    options: dict[str, list[str]]


# The index's sort columns: the query parameter's type (routes) and the check here.
SortKey = Literal[
    "key", "title", "owner", "status", "srm", "alerts", "progress", "recommendation", "created"
]
SORTS: tuple[str, ...] = get_args(SortKey)


def index_rows(session: Session, filters: IndexFilters | None = None) -> IndexPage:
    """The experiments matching ``filters`` with health and recommendation, sorted.

    An experiment whose analysis fails is listed without health rather than hiding the others.
    """
    f = filters or IndexFilters()
    exps = session.exec(
        select(Experiment)
        .order_by(col(Experiment.created_at).desc(), col(Experiment.id).desc())
        .limit(INDEX_LIMIT)
    ).all()
    options = {
        "status": sorted({e.status for e in exps}),
        "owner": sorted({e.owner for e in exps}),
        "tag": sorted({t for e in exps for t in (e.tags or [])}),
    }
    words = f.q.casefold().split()
    chosen: list[tuple[Experiment, ExperimentPublic]] = []
    for exp in exps:
        if (f.status and exp.status != f.status) or (f.owner and exp.owner != f.owner):
            continue
        if f.tag and f.tag not in (exp.tags or []):
            continue
        pub = to_public(session, exp)
        if words:
            text = _search_text(pub)
            if not all(w in text for w in words):
                continue
        chosen.append((exp, pub))
    open_alerts: dict[str, list[str]] = {}
    for alert in reversed(list_alerts(session)):  # oldest first within each experiment
        if alert.resolved_at is None:
            open_alerts.setdefault(alert.experiment, []).append(alert.type.value)
    rows = []
    for exp, pub in chosen:
        results: ResultsPublic | None = None
        if exp.status not in NO_DATA_STATUSES:
            try:
                results = latest_results(session, exp)
            except Exception:  # one broken experiment must not hide the portfolio
                log.exception("results of %s failed on the index page", exp.key)
                session.rollback()  # PostgreSQL refuses further queries in a failed transaction
        row = IndexRow(
            key=exp.key,
            title=exp.title,
            owner=exp.owner,
            status=exp.status,
            tags=tuple(exp.tags or ()),
            srm="" if results is None else ("mismatch" if results.srm.mismatch else "ok"),
            multiple_exposures=None if results is None else results.multiple_exposures,
            recommendation=None if results is None else results.decision.recommendation,
            progress=progress_fraction(results),
            open_alerts=tuple(open_alerts.get(exp.key, ())),
            created_at=pub.created_at.isoformat(),
            decision=pub.decision.decision if pub.decision is not None else None,
        )
        if f.recommendation and row.recommendation != f.recommendation:
            continue
        rows.append(row)
    return IndexPage(rows=_sorted(rows, f), total=len(exps), options=options)


def _sorted(rows: list[IndexRow], f: IndexFilters) -> list[IndexRow]:
    if f.sort not in SORTS or f.sort == "created":
        out = sorted(rows, key=lambda r: r.created_at, reverse=True)
        return out[::-1] if f.order == "asc" else out
    keys = {
        "key": lambda r: r.key,
        "title": lambda r: r.title.casefold(),
        "owner": lambda r: r.owner.casefold(),
        "status": lambda r: r.status,
        "srm": lambda r: r.srm,
        "alerts": lambda r: len(r.open_alerts),
        "progress": lambda r: -1.0 if r.progress is None else r.progress,
        "recommendation": lambda r: r.recommendation or "",
    }
    return sorted(rows, key=keys[f.sort], reverse=f.order == "desc")


def with_shared(inputs: ReportInputs) -> ReportInputs:
    return replace(inputs, shared=True)
