"""Outcome snapshots (taken at stop and conclude) and the portfolio insights computed from them."""

from __future__ import annotations

import logging
import statistics
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

from sqlmodel import Session, col, select

from service.alerts.models import Alert, AlertType
from service.analysis.models import ResultsPublic
from service.db import utcnow
from service.experiments import service as experiments
from service.experiments.models import DecisionRow, Experiment, Status
from service.insights.models import (
    Durations,
    ExperimentOutcome,
    InsightsPublic,
    MonthCount,
    OutcomePublic,
    Outcomes,
    Rate,
)

log = logging.getLogger("trialbook.insights")

DECISIONS = ("ship", "roll_back", "inconclusive")


def _results(session: Session, exp: Experiment) -> ResultsPublic:
    from service.snapshots.service import latest_results

    return latest_results(session, exp)  # the latest snapshot (service.snapshots)


def primary_win(results: ResultsPublic) -> str | None:
    """The treatment that beat control on the primary metric (significant, good direction)."""
    for metric in results.metrics:
        if metric.role != "primary":
            continue
        sign = 1.0 if metric.higher_is_better else -1.0
        best: tuple[float, str] | None = None
        for comp in metric.comparisons:
            estimate = comp.absolute.estimate
            if comp.significant and estimate is not None and sign * estimate > 0:
                lift = sign * float(comp.relative.estimate or estimate)
                if best is None or lift > best[0]:
                    best = (lift, comp.variant)
        return best[1] if best else None
    return None


def snapshot(session: Session, exp: Experiment) -> ExperimentOutcome:
    """Take (or retake) the outcome snapshot of an experiment. The caller commits."""
    assert exp.id is not None
    row = session.get(ExperimentOutcome, exp.id) or ExperimentOutcome(
        experiment_id=exp.id, phase=exp.phase
    )
    row.phase = exp.phase
    row.taken_at = utcnow()
    stopped = exp.stopped_at or utcnow()
    early_by_time = (
        exp.started_at is not None
        and exp.planned_duration_days is not None
        and stopped - exp.started_at < timedelta(days=exp.planned_duration_days)
    )
    try:
        # A savepoint: a failed analysis never aborts the stop/conclude that asked for it.
        with session.begin_nested():
            results = results_provider(session, exp)
    except Exception as exc:
        log.exception("outcome snapshot of %s: analysis failed", exp.key)
        row.error = f"{type(exc).__name__}: {exc}"[:1000]
        row.stopped_early = bool(early_by_time)
        session.add(row)
        return row
    winner = primary_win(results)
    row.error = None
    row.recommendation = results.decision.recommendation
    row.recommended_variant = results.decision.variant
    row.srm_mismatch = results.srm.mismatch
    row.primary_win = winner is not None
    row.primary_winner = winner
    row.progress = results.power.progress
    row.stopped_early = bool(early_by_time) or (row.progress is not None and row.progress < 1.0)
    # The parts of the §6 JSON the outcome keeps, as the results endpoint sends them.
    kept = ("decision", "power", "srm", "computed_at")
    dumped = results.model_dump(mode="json", include=set(kept))
    row.snapshot = {k: dumped[k] for k in kept}
    session.add(row)
    return row


results_provider: Callable[[Session, Experiment], ResultsPublic] = _results


def on_transition(session: Session, exp: Experiment, action: str, old: str, new: str) -> None:
    """In ``experiments.hooks.transition_listeners`` (service.wiring): snapshot at stop, and at
    conclude when no snapshot exists yet."""
    if action == "stop" or (
        action == "conclude" and session.get(ExperimentOutcome, exp.id) is None
    ):
        snapshot(session, exp)


def outcome_of(session: Session, experiment_key: str) -> OutcomePublic | None:
    """The stored outcome snapshot of one experiment (for the report), or None."""
    exp = experiments.get_row(session, experiment_key)
    row = session.get(ExperimentOutcome, exp.id)
    if row is None:
        return None
    return OutcomePublic(
        experiment=exp.key, **row.model_dump(exclude={"experiment_id", "snapshot"})
    )


def followed(
    recommendation: str | None, rec_variant: str | None, decision: DecisionRow
) -> bool | None:
    """Did the recorded decision follow the recommendation at stop? None: not comparable.

    ``ship`` is followed by shipping the recommended variant; ``roll_back`` and ``inconclusive``
    by the same decision; ``invalid`` (SRM) by any decision except ``ship``; ``keep_running``
    (stopped early) has no decision to follow and is left out.
    """
    made = decision.get("decision")
    if recommendation is None or made is None:
        return None
    if recommendation == "ship":
        return bool(
            made == "ship" and (rec_variant is None or decision.get("variant") == rec_variant)
        )
    if recommendation in ("roll_back", "inconclusive"):
        return bool(made == recommendation)
    if recommendation == "invalid":
        return bool(made != "ship")
    return None


def _rate(numerator: int, denominator: int) -> Rate:
    return Rate(
        numerator=numerator,
        denominator=denominator,
        share=numerator / denominator if denominator else None,
    )


def compute_insights(session: Session) -> InsightsPublic:
    """Portfolio insights from the registry, the outcome snapshots and the alerts."""
    exps = session.exec(select(Experiment).order_by(col(Experiment.id))).all()
    outcomes = {o.experiment_id: o for o in session.exec(select(ExperimentOutcome)).all()}
    srm_alerted = set(
        session.exec(select(Alert.experiment_id).where(Alert.type == AlertType.srm.value)).all()
    )
    by_status = dict.fromkeys((s.value for s in Status), 0)
    for e in exps:
        by_status[e.status] = by_status.get(e.status, 0) + 1

    concluded = [e for e in exps if e.status == Status.concluded.value and e.decision]
    months = Counter(e.concluded_at.strftime("%Y-%m") for e in concluded if e.concluded_at)
    counts = Counter(str((e.decision or {}).get("decision")) for e in concluded)
    decision_counts = {d: counts.get(d, 0) for d in DECISIONS}

    concluded_outcomes = [
        outcomes[e.id] for e in concluded if e.id is not None and e.id in outcomes
    ]
    analysed = [o for o in concluded_outcomes if o.primary_win is not None]
    wins = sum(1 for o in analysed if o.primary_win)

    planned: list[float] = []
    actual: list[float] = []
    for e in exps:
        if e.started_at is None or e.stopped_at is None or e.planned_duration_days is None:
            continue
        planned.append(float(e.planned_duration_days))
        actual.append((e.stopped_at - e.started_at).total_seconds() / 86400)

    started = [e for e in exps if e.started_at is not None]
    with_srm = sum(
        1
        for e in started
        if e.id in srm_alerted
        or (e.id is not None and e.id in outcomes and outcomes[e.id].srm_mismatch)
    )

    verdicts = [
        followed(o.recommendation, o.recommended_variant, e.decision or {})
        for e in concluded
        if e.id is not None and (o := outcomes.get(e.id)) is not None
    ]
    comparable = [v for v in verdicts if v is not None]

    return InsightsPublic(
        computed_at=utcnow(),
        experiments_by_status=by_status,
        concluded_per_month=[MonthCount(month=m, count=c) for m, c in sorted(months.items())],
        outcomes=Outcomes(
            concluded=len(concluded),
            counts=decision_counts,
            shares={
                d: (c / len(concluded) if concluded else None) for d, c in decision_counts.items()
            },
        ),
        win_rate=_rate(wins, len(analysed)),
        duration=Durations(
            experiments=len(planned),
            median_planned_days=statistics.median(planned) if planned else None,
            median_actual_days=statistics.median(actual) if actual else None,
        ),
        srm=_rate(with_srm, len(started)),
        followed_recommendation=_rate(sum(comparable), len(comparable)),
        stopped_early=sum(1 for o in outcomes.values() if o.stopped_early),
    )
