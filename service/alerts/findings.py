"""A condition a health check found (:class:`Finding`), and raising it as an alert: stored once
per (experiment, phase, type, condition), with its ``alert.<type>`` webhook.

Both checks raise through :func:`raise_alert`: the per-experiment rules
(:mod:`service.alerts.service`) and the interaction check (:mod:`service.alerts.interactions`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from service.alerts.models import Alert, AlertType
from service.db import utcnow
from service.experiments.models import Experiment
from service.webhooks import service as webhooks
from service.webhooks.models import EventType


@dataclass(frozen=True)
class Finding:
    """A condition found by a check, before it is stored."""

    type: AlertType
    message: str
    condition: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def raise_alert(session: Session, exp: Experiment, finding: Finding) -> bool:
    """Insert the alert unless this condition was already raised; True when it is new.

    A new alert queues the ``alert.<type>`` webhook in the same transaction. The caller commits.
    """
    assert exp.id is not None
    values = {
        "experiment_id": exp.id,
        "experiment_key": exp.key,
        "phase": exp.phase,
        "type": finding.type.value,
        "condition": finding.condition,
        "message": finding.message[:2000],
        "details": finding.details,
        "created_at": utcnow(),
    }
    table = Alert.__table__  # type: ignore[attr-defined]  # set by SQLModel at class creation
    dialect = session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    stmt = (
        insert.values(**values)
        .on_conflict_do_nothing(index_elements=["experiment_id", "phase", "type", "condition"])
        .returning(table.c.id)
    )
    # RETURNING yields the new row only when it was inserted (rowcount is not portable here).
    if session.execute(stmt).first() is None:
        return False
    webhooks.enqueue(
        session,
        EventType(f"alert.{finding.type.value}"),
        webhooks.experiment_data(exp)
        | {
            "alert": {
                "type": finding.type.value,
                "condition": finding.condition,
                "message": finding.message,
                "details": finding.details,
            }
        },
    )
    return True
