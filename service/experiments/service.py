"""The experiment registry: lookups, create/list/update, the audit trail. Validation, the plan,
the lifecycle and layers have modules of their own (validation, plan, lifecycle, service.layers)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from service.auth import Principal
from service.db import utcnow
from service.errors import (
    ConflictError,
    FieldError,
    NotFoundError,
    ValidationFailedError,
    validation_field_errors,
)
from service.experiments.hooks import protocol_hooks, update_hooks
from service.experiments.models import (
    AnalysisSettings,
    AuditEntry,
    AuditEntryOut,
    Experiment,
    ExperimentCreate,
    ExperimentList,
    ExperimentMetric,
    ExperimentPhase,
    ExperimentPublic,
    ExperimentUpdate,
    PhaseOut,
    Status,
    VariantRow,
)
from service.experiments.plan import plan_into, plan_warnings
from service.experiments.validation import protocol_of, protocol_problems, raise_problems

# Fields that can change at any time, even after start: they do not alter the analysis.
ALWAYS_EDITABLE = frozenset({"title", "description", "owner", "tags", "overrides"})
# Fields that may change while running/paused without a new phase (ramping traffic up keeps
# every unit that was already in, in the same variant; see trialbook.hashing).
LIVE_EDITABLE = frozenset({"traffic_fraction", "expected_daily_units"})


# ------------------------------------------------------------------------------------- lookups


def get_row(session: Session, key: str) -> Experiment:
    row = session.exec(select(Experiment).where(Experiment.key == key)).first()
    if row is None:
        raise NotFoundError(f"No experiment with key '{key}'.")
    return row


def control_of(variants: Sequence[VariantRow]) -> str:
    return str(next(v["key"] for v in variants if v.get("is_control")))


def phases_of(session: Session, exp: Experiment) -> list[ExperimentPhase]:
    return list(
        session.exec(
            select(ExperimentPhase)
            .where(ExperimentPhase.experiment_id == exp.id)
            .order_by(col(ExperimentPhase.phase))
        ).all()
    )


def current_phase(session: Session, exp: Experiment) -> ExperimentPhase | None:
    return session.exec(
        select(ExperimentPhase).where(
            ExperimentPhase.experiment_id == exp.id, ExperimentPhase.phase == exp.phase
        )
    ).first()


def to_public(session: Session, exp: Experiment) -> ExperimentPublic:
    phases = [PhaseOut.model_validate(p, from_attributes=True) for p in phases_of(session, exp)]
    return ExperimentPublic.model_validate(
        {
            **exp.model_dump(),
            "primary_metric": {"metric": exp.primary_metric, "mde": exp.primary_mde},
            "phases": phases,
            "warnings": plan_warnings(exp),
        }
    )


# ---------------------------------------------------------------------------------- audit trail


def audit(
    session: Session,
    exp: Experiment,
    actor: str,
    action: str,
    *,
    from_status: str | None = None,
    to_status: str | None = None,
    note: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    assert exp.id is not None
    session.add(
        AuditEntry(
            experiment_id=exp.id,
            actor=actor,
            action=action,
            from_status=from_status,
            to_status=to_status,
            note=note,
            details=details,
        )
    )


def list_audit(session: Session, key: str) -> list[AuditEntryOut]:
    exp = get_row(session, key)
    rows = session.exec(
        select(AuditEntry).where(AuditEntry.experiment_id == exp.id).order_by(col(AuditEntry.id))
    ).all()
    return [AuditEntryOut.model_validate(r, from_attributes=True) for r in rows]


# ----------------------------------------------------------------------------------- registry


def _sync_metric_links(session: Session, exp: Experiment) -> None:
    assert exp.id is not None
    session.exec(delete(ExperimentMetric).where(col(ExperimentMetric.experiment_id) == exp.id))
    session.add(
        ExperimentMetric(experiment_id=exp.id, metric_key=exp.primary_metric, role="primary")
    )
    for key in exp.secondary_metrics:
        session.add(ExperimentMetric(experiment_id=exp.id, metric_key=key, role="secondary"))
    for g in exp.guardrails:
        session.add(
            ExperimentMetric(experiment_id=exp.id, metric_key=g["metric"], role="guardrail")
        )


def experiments_using(session: Session, metric_key: str) -> list[str]:
    """Keys of experiments out of `draft` that use the metric in any role (a metric's definition
    cannot change under them: :data:`service.metrics.service.definition_users`)."""
    rows = session.exec(
        select(Experiment.key)
        .join(ExperimentMetric, col(ExperimentMetric.experiment_id) == col(Experiment.id))
        .where(ExperimentMetric.metric_key == metric_key, Experiment.status != "draft")
        .distinct()
    ).all()
    return sorted(rows)


def _apply_protocol(exp: Experiment, p: ExperimentCreate) -> None:
    data = p.model_dump(mode="json", exclude={"key", "template", "primary_metric"})
    for field, value in data.items():
        setattr(exp, field, value)
    exp.primary_metric = p.primary_metric.metric
    exp.primary_mde = p.primary_metric.mde


def create_experiment(session: Session, body: ExperimentCreate, who: Principal) -> ExperimentPublic:
    if session.exec(select(Experiment.id).where(Experiment.key == body.key)).first() is not None:
        raise ConflictError(
            f"An experiment with key '{body.key}' already exists; keys are unique and immutable.",
            code="duplicate_key",
        )
    template, template_version = None, None
    errors: list[FieldError] = []
    try:
        for hook in protocol_hooks:
            body, template, template_version = hook(session, body, who)
    except ValidationFailedError as exc:  # the template's rules: reported with the protocol's
        errors += exc.errors or [FieldError(field="body", message=exc.detail)]
    problems, metrics = protocol_problems(session, body.model_dump(mode="json"))
    errors += problems
    exp = Experiment(
        key=body.key,
        seed=secrets.token_hex(8),
        created_by=who.actor,
        template=template,
        template_version=template_version,
        hypothesis="",
        variants=[],
        primary_metric="",
        primary_mde=1.0,
        analysis={},
        title="",
        owner="",
    )
    _apply_protocol(exp, body)
    errors += plan_into(exp, metrics.get(body.primary_metric.metric), problems)
    raise_problems(errors)
    session.add(exp)
    session.flush()
    assert exp.id is not None
    session.add(
        ExperimentPhase(
            experiment_id=exp.id,
            phase=1,
            variants=exp.variants,
            traffic_fraction=exp.traffic_fraction,
            reason="initial protocol",
        )
    )
    _sync_metric_links(session, exp)
    audit(session, exp, who.actor, "create", to_status=Status.draft.value)
    session.commit()
    return to_public(session, exp)


def list_experiments(
    session: Session,
    *,
    status: Status | None,
    owner: str | None,
    limit: int,
    offset: int,
) -> ExperimentList:
    query = select(Experiment)
    count = select(func.count()).select_from(Experiment)
    if status is not None:
        query = query.where(Experiment.status == status.value)
        count = count.where(Experiment.status == status.value)
    if owner is not None:
        query = query.where(Experiment.owner == owner)
        count = count.where(Experiment.owner == owner)
    total = session.exec(count).one()
    rows = session.exec(
        query.order_by(col(Experiment.created_at).desc(), col(Experiment.id).desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return ExperimentList(
        items=[to_public(session, r) for r in rows], total=total, limit=limit, offset=offset
    )


def _normal_form(data: dict[str, Any]) -> dict[str, Any]:
    """A stored protocol as the schema dumps it (defaults filled in), to compare with a new one."""
    try:
        return ExperimentCreate.model_validate(data).model_dump(mode="json")
    except ValueError:  # a row written under an older schema: compare it as stored
        return data


def update_experiment(
    session: Session, key: str, body: ExperimentUpdate, who: Principal
) -> ExperimentPublic:
    exp = get_row(session, key)
    changes = body.model_dump(mode="json", exclude_unset=True)
    nulls = [
        k
        for k, v in changes.items()
        if v is None
        and k
        not in (
            "description",
            "targeting",
            "baseline",
            "expected_daily_units",
            "attribution_window_hours",
            "layer",
            "layer_allocation",
        )
    ]
    if nulls:
        raise ValidationFailedError(
            "these fields cannot be null: " + ", ".join(nulls),
            errors=[
                FieldError(field=k, message="cannot be null; omit it to keep the value")
                for k in nulls
            ],
        )
    current = protocol_of(exp)
    if isinstance(changes.get("analysis"), dict):
        # A merge patch (RFC 7396): analysis settings the request leaves out keep their stored
        # value (a template default, say) instead of falling back to the schema default.
        changes["analysis"] = dict(current.get("analysis") or {}) | changes["analysis"]
    status = Status(exp.status)
    if status is not Status.draft:
        editable = ALWAYS_EDITABLE | (
            LIVE_EDITABLE if status in (Status.running, Status.paused) else frozenset()
        )
        frozen = sorted(k for k, v in changes.items() if k not in editable and current.get(k) != v)
        if frozen:
            hint = (
                " New variants or weights go through POST /v1/experiments/{key}/phases."
                if "variants" in frozen
                else ""
            )
            raise ConflictError(
                "The protocol is frozen once the experiment leaves draft (status "
                f"'{status.value}'); these fields cannot change: {', '.join(frozen)}.{hint}",
                code="protocol_frozen",
                errors=[FieldError(field=k, message="frozen after start") for k in frozen],
            )
    merged = current | changes
    merged["key"] = exp.key
    try:
        protocol = ExperimentCreate.model_validate(merged)
    except ValidationError as exc:
        # The update breaks the rules in combination with what is stored: say which, with the
        # cross-field problems, in one 422.
        problems, _ = protocol_problems(session, merged)
        raise_problems(validation_field_errors(exc.errors()) + problems)
        raise  # unreachable: a failed validation lists at least one error
    before = {k: v for k, v in current.items() if k in changes}
    # Compared in normal form: re-sending a variant without its null `name` is no change (and so
    # does not, for instance, clear an approval).
    stored = _normal_form(current | {"key": exp.key})
    proposed = protocol.model_dump(mode="json")
    changed = sorted(k for k in changes if stored.get(k) != proposed.get(k))
    approved_before = exp.approved_by
    errors: list[FieldError] = []
    hook_notes: list[str] = []
    try:
        for hook in update_hooks:
            if (note := hook(session, exp, protocol, frozenset(changed), who)) is not None:
                hook_notes.append(note)
    except ValidationFailedError as exc:  # the template's rules: reported with the protocol's
        errors += exc.errors or [FieldError(field="body", message=exc.detail)]
    if "overrides" in changes and status is not Status.draft:
        variant_keys = {v["key"] for v in exp.variants}
        bad = {u: v for u, v in protocol.overrides.items() if v not in variant_keys}
        if bad:
            raise ValidationFailedError(
                "overrides name unknown variants",
                errors=[
                    FieldError(field=f"overrides.{u}", message=f"'{v}' is not a variant")
                    for u, v in bad.items()
                ],
            )
    problems, metrics = protocol_problems(session, protocol.model_dump(mode="json"))
    raise_problems(errors + problems)  # before the row changes: nothing to undo
    _apply_protocol(exp, protocol)
    raise_problems(plan_into(exp, metrics.get(protocol.primary_metric.metric), problems))
    exp.updated_at = utcnow()
    if status is Status.draft:
        phase = current_phase(session, exp)
        if phase is not None:
            phase.variants = exp.variants
            phase.traffic_fraction = exp.traffic_fraction
            session.add(phase)
    elif "traffic_fraction" in changes:
        phase = current_phase(session, exp)
        if phase is not None:
            phase.traffic_fraction = exp.traffic_fraction
            session.add(phase)
    session.add(exp)
    _sync_metric_links(session, exp)
    if changed:
        details: dict[str, Any] = {
            "fields": changed,
            "before": {k: before.get(k) for k in changed},
        }
        if approved_before is not None and exp.approved_by is None:
            details["approval_cleared"] = approved_before
        audit(
            session,
            exp,
            who.actor,
            "update",
            note="; ".join(hook_notes) or None,
            details=details,
        )
    session.commit()
    return to_public(session, exp)


def analysis_settings(exp: Experiment) -> AnalysisSettings:
    """The stored analysis settings; a row stored under older, looser ranges is read as stored
    (its numbers were accepted then, and the analysis must not fail on them now)."""
    try:
        return AnalysisSettings.model_validate(exp.analysis)
    except ValidationError:
        return AnalysisSettings.model_construct(
            **(AnalysisSettings().model_dump() | dict(exp.analysis or {}))
        )
