"""The experiment lifecycle: transitions (start, pause, resume, stop, conclude, archive), phases
and notes, with the hooks of other domains (:mod:`service.experiments.hooks`)."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from service.auth import Principal
from service.db import utcnow
from service.errors import (
    ConflictError,
    ValidationFailedError,
)
from service.experiments.hooks import phase_hooks, start_checks, transition_listeners
from service.experiments.models import (
    ConcludeIn,
    Experiment,
    ExperimentPhase,
    ExperimentPublic,
    Layer,
    PhaseCreate,
    Status,
    variant_rows,
)
from service.experiments.plan import compute_plan
from service.experiments.service import audit, current_phase, get_row, to_public
from service.experiments.validation import conclusion_errors, raise_problems, variant_errors
from service.metrics.models import Metric

# lifecycle: action -> (allowed from, to)
TRANSITIONS: dict[str, tuple[frozenset[Status], Status]] = {
    "start": (frozenset({Status.draft}), Status.running),
    "pause": (frozenset({Status.running}), Status.paused),
    "resume": (frozenset({Status.paused}), Status.running),
    "stop": (frozenset({Status.running, Status.paused}), Status.stopped),
    "conclude": (frozenset({Status.stopped}), Status.concluded),
    "archive": (frozenset({Status.draft}), Status.archived),
}


# An experiment without layer_allocation takes this fraction of its layer at start.
DEFAULT_LAYER_ALLOCATION = 0.5


def _allocate_layer_range(session: Session, exp: Experiment) -> list[float] | None:
    if exp.layer is None:
        return None
    layer = session.exec(select(Layer).where(Layer.key == exp.layer)).first()
    if layer is None:
        raise ConflictError(f"The layer '{exp.layer}' no longer exists.", code="layer_missing")
    live = session.exec(
        select(Experiment).where(
            Experiment.layer == exp.layer,
            col(Experiment.status).in_([Status.running.value, Status.paused.value]),
            Experiment.id != exp.id,
        )
    ).all()
    taken = sorted(tuple(e.layer_range) for e in live if e.layer_range)
    lo_bound = layer.holdout_fraction
    width = (exp.layer_allocation or DEFAULT_LAYER_ALLOCATION) * (1.0 - lo_bound)
    cursor = lo_bound
    for lo, hi in [*taken, (1.0, 1.0)]:
        if lo - cursor >= width - 1e-12:
            return [round(cursor, 12), round(cursor + width, 12)]
        cursor = max(cursor, hi)
    raise ConflictError(
        f"Layer '{exp.layer}' has no free slice of {width:.4g} of its hash space: "
        f"running experiments hold {taken}. Stop one or lower layer_allocation.",
        code="layer_full",
    )


def transition(
    session: Session,
    key: str,
    action: str,
    who: Principal,
    *,
    note: str | None = None,
    conclusion: ConcludeIn | None = None,
) -> ExperimentPublic:
    exp = get_row(session, key)
    allowed, target = TRANSITIONS[action]
    status = Status(exp.status)
    if status not in allowed:
        raise ConflictError(
            f"Cannot {action} an experiment that is '{status.value}'; {action} needs status "
            f"{' or '.join(sorted(s.value for s in allowed))}.",
            code="illegal_transition",
        )
    now = utcnow()
    details: dict[str, Any] | None = None
    if action in ("start", "resume"):
        # A resume runs the checks again: a new phase may be waiting for an approval.
        for check in start_checks:
            check(session, exp, who)
    if action == "start":
        exp.layer_range = _allocate_layer_range(session, exp)
        exp.started_at = now
        phase = current_phase(session, exp)
        if phase is not None:
            phase.started_at = now
            session.add(phase)
        if exp.layer_range is not None:
            details = {"layer_range": exp.layer_range}
    elif action == "resume":
        phase = current_phase(session, exp)
        if phase is not None and phase.started_at is None:  # a new phase that waited
            phase.started_at = now
            session.add(phase)
    elif action == "stop":
        exp.stopped_at = now
        phase = current_phase(session, exp)
        if phase is not None:
            phase.ended_at = now
            session.add(phase)
    elif action == "conclude":
        assert conclusion is not None
        raise_problems(
            conclusion_errors(
                conclusion.decision, conclusion.variant, [v["key"] for v in exp.variants]
            )
        )
        exp.decision = {
            "decision": conclusion.decision,
            "variant": conclusion.variant,
            "rationale": conclusion.rationale,
            "decided_by": who.actor,
            "decided_at": now.isoformat(),
        }
        exp.concluded_at = now
        note = conclusion.rationale
        details = {"decision": conclusion.decision, "variant": conclusion.variant}
    exp.status = target.value
    exp.updated_at = now
    session.add(exp)
    audit(
        session,
        exp,
        who.actor,
        action,
        from_status=status.value,
        to_status=target.value,
        note=note,
        details=details,
    )
    for listener in transition_listeners:
        listener(session, exp, action, status.value, target.value)
    session.commit()
    return to_public(session, exp)


def new_phase(session: Session, key: str, body: PhaseCreate, who: Principal) -> ExperimentPublic:
    exp = get_row(session, key)
    status = Status(exp.status)
    if status not in (Status.running, Status.paused):
        raise ConflictError(
            f"A new phase starts only for a running or paused experiment (status "
            f"'{status.value}'); in draft, PATCH the variants instead.",
            code="illegal_transition",
        )
    if body.variants is None and body.traffic_fraction is None:
        raise ValidationFailedError.on("variants", "give new `variants` and/or `traffic_fraction`")
    variants = exp.variants
    if body.variants is not None:
        errors = variant_errors(body.variants)
        if errors:
            raise ValidationFailedError("; ".join(e.message for e in errors), errors=errors)
        variants = variant_rows(body.variants)
        removed = sorted(set(exp.overrides.values()) - {v["key"] for v in variants})
        if removed:
            raise ConflictError(
                f"overrides point at variants the new phase drops ({removed}); PATCH them first",
                code="override_variant_removed",
            )
    waits = [why for hook in phase_hooks if (why := hook(session, exp, who)) is not None]
    now = utcnow()
    old = current_phase(session, exp)
    if old is not None:
        old.ended_at = now
        session.add(old)
    assert exp.id is not None
    exp.phase += 1
    if waits:
        exp.status = Status.paused.value
    exp.variants = variants
    if body.traffic_fraction is not None:
        exp.traffic_fraction = body.traffic_fraction
    exp.updated_at = now
    session.add(
        ExperimentPhase(
            experiment_id=exp.id,
            phase=exp.phase,
            variants=variants,
            traffic_fraction=exp.traffic_fraction,
            reason=body.reason,
            started_at=None if waits else now,
        )
    )
    primary = session.exec(select(Metric).where(Metric.key == exp.primary_metric)).first()
    exp.sample_size_per_variant, exp.planned_duration_days = compute_plan(exp, primary)
    session.add(exp)
    audit(
        session,
        exp,
        who.actor,
        "new_phase",
        from_status=status.value if exp.status != status.value else None,
        to_status=exp.status if exp.status != status.value else None,
        note="; ".join([body.reason, *waits]),
        details={
            "phase": exp.phase,
            "variants": variants,
            "traffic_fraction": exp.traffic_fraction,
        },
    )
    if exp.status != status.value:
        for listener in transition_listeners:
            listener(session, exp, "pause", status.value, exp.status)
    session.commit()
    return to_public(session, exp)


def add_note(session: Session, key: str, text: str, who: Principal) -> ExperimentPublic:
    exp = get_row(session, key)
    exp.notes = [*exp.notes, {"at": utcnow().isoformat(), "by": who.actor, "text": text}]
    exp.updated_at = utcnow()
    session.add(exp)
    audit(session, exp, who.actor, "note", note=text)
    session.commit()
    return to_public(session, exp)
