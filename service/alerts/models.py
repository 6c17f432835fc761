"""Alert table and schemas."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from pydantic import Field as PField
from sqlalchemy import JSON, Index, UniqueConstraint
from sqlmodel import Column, Field, SQLModel

from service.db import UTCDateTime, utcnow


class AlertType(StrEnum):
    srm = "srm"
    guardrail_failed = "guardrail_failed"
    decision_ready = "decision_ready"
    overdue = "overdue"
    stalled = "stalled"


class Alert(SQLModel, table=True):
    """One health condition of one experiment phase. The unique key makes it raised once, however
    many schedulers (service processes, cron) look at the same experiment."""

    __tablename__ = "alert"
    __table_args__ = (
        UniqueConstraint("experiment_id", "phase", "type", "condition", name="uq_alert_condition"),
        Index("ix_alert_created_at", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiment.id", ondelete="CASCADE", index=True)
    experiment_key: str = Field(max_length=80)
    phase: int
    type: str = Field(max_length=40)
    # What exactly, within the type: "" or e.g. "error_rate:treatment" for a guardrail.
    condition: str = Field(default="", max_length=200)
    message: str = Field(max_length=2000)
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    resolved_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    resolved_by: str | None = Field(default=None, max_length=300)


class AlertPublic(BaseModel):
    id: int
    experiment: str
    phase: int
    type: AlertType
    condition: str
    message: str
    details: dict[str, Any]
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None


class AlertList(BaseModel):
    items: list[AlertPublic]
    total: int
    limit: int
    offset: int


class CheckedExperiment(BaseModel):
    experiment: str
    raised: list[AlertType]
    error: str | None = None
    warnings: list[str] = PField(
        default_factory=list,
        description="metrics the checks could not judge, as 'metric: code' "
        "(e.g. 'revenue: non_finite_statistics', sums overflowed by values stored unbounded)",
    )


class CheckReport(BaseModel):
    checked: int
    raised: int
    experiments: list[CheckedExperiment]
