"""Metric catalogue rules."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import func
from sqlmodel import Session, col, select

from service.db import utcnow
from service.errors import ConflictError, FieldError, NotFoundError, ValidationFailedError
from service.metrics.models import (
    Metric,
    MetricCreate,
    MetricDefinition,
    MetricList,
    MetricPublic,
    MetricUpdate,
)

DEFINITION_FIELDS = (
    "type",
    "event",
    "aggregation",
    "numerator_event",
    "denominator_event",
    "higher_is_better",
    "winsorize_lower",
    "winsorize_upper",
    "quantile",
)

# What relies on a metric's definition, asked before it changes: each is called with (session,
# metric key) and returns the keys of what uses the metric (the experiments out of draft:
# service.experiments.service.experiments_using); the change is refused while any is named.
# service.wiring.install_hooks fills the list.
DefinitionUsers = Callable[[Session, str], list[str]]
definition_users: list[DefinitionUsers] = []


def to_public(row: Metric) -> MetricPublic:
    return MetricPublic.model_validate(row, from_attributes=True)


def get_metric_row(session: Session, key: str) -> Metric:
    row = session.exec(select(Metric).where(Metric.key == key)).first()
    if row is None:
        raise NotFoundError(f"No metric with key '{key}'.")
    return row


def metrics_by_key(session: Session, keys: list[str]) -> dict[str, Metric]:
    if not keys:
        return {}
    rows = session.exec(select(Metric).where(col(Metric.key).in_(keys))).all()
    return {r.key: r for r in rows}


def unknown_metric_errors(session: Session, named: Sequence[tuple[str, str]]) -> list[FieldError]:
    """One error per (field, metric key) whose key is not in the catalogue."""
    found = set(metrics_by_key(session, sorted({key for _, key in named})))
    return [
        FieldError(
            field=field,
            message=f"no metric '{key}' in the catalogue; create it first with POST /v1/metrics "
            "(GET /v1/metrics lists the keys)",
            type="unknown_metric",
        )
        for field, key in named
        if key not in found
    ]


def create_metric(session: Session, body: MetricCreate) -> MetricPublic:
    if session.exec(select(Metric.id).where(Metric.key == body.key)).first() is not None:
        raise ConflictError(f"A metric with key '{body.key}' already exists.", code="duplicate_key")
    row = Metric(**body.model_dump())
    session.add(row)
    session.commit()
    session.refresh(row)
    return to_public(row)


def list_metrics(session: Session, *, limit: int, offset: int) -> MetricList:
    total = session.exec(select(func.count()).select_from(Metric)).one()
    rows = session.exec(select(Metric).order_by(col(Metric.key)).limit(limit).offset(offset)).all()
    return MetricList(items=[to_public(r) for r in rows], total=total, limit=limit, offset=offset)


def update_metric(session: Session, key: str, body: MetricUpdate) -> MetricPublic:
    row = get_metric_row(session, key)
    changes = body.model_dump(exclude_unset=True)
    definition_changes = {
        k: v for k, v in changes.items() if k in DEFINITION_FIELDS and getattr(row, k) != v
    }
    if definition_changes:
        users = sorted({user for find in definition_users for user in find(session, key)})
        if users:
            raise ConflictError(
                f"Metric '{key}' is used by experiments that have left draft ({', '.join(users)}); "
                f"its definition ({', '.join(sorted(definition_changes))}) cannot change. "
                "Create a new metric instead.",
                code="metric_in_use",
            )
        merged = {k: getattr(row, k) for k in DEFINITION_FIELDS} | definition_changes
        if "type" in definition_changes:
            # A change of type resets the fields that belong to the old type unless given.
            for k in ("event", "aggregation", "numerator_event", "denominator_event", "quantile"):
                if k not in changes:
                    merged[k] = None
        try:
            MetricDefinition.model_validate(merged)
        except ValueError as exc:
            raise ValidationFailedError.on("body", str(exc).splitlines()[-1].strip()) from exc
        definition = MetricDefinition.model_validate(merged)
        for k in DEFINITION_FIELDS:
            setattr(row, k, getattr(definition, k))
    for k in ("name", "description"):
        if k in changes:
            if k == "name" and changes[k] is None:
                raise ValidationFailedError.on("name", "name cannot be null")
            setattr(row, k, changes[k])
    row.updated_at = utcnow()
    session.add(row)
    session.commit()
    session.refresh(row)
    return to_public(row)
