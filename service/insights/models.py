"""The outcome snapshot table and the insights schema."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from pydantic import Field as PField
from sqlalchemy import JSON
from sqlmodel import Column, Field, SQLModel

from service.db import UTCDateTime, utcnow


class ExperimentOutcome(SQLModel, table=True):
    """The analysis as it stood when the experiment stopped (refreshed at conclude if missing),
    so that portfolio insights never re-analyse every experiment."""

    __tablename__ = "experiment_outcome"

    experiment_id: int = Field(foreign_key="experiment.id", primary_key=True, ondelete="CASCADE")
    phase: int
    recommendation: str | None = Field(default=None, max_length=20)
    recommended_variant: str | None = Field(default=None, max_length=64)
    srm_mismatch: bool | None = None
    # True: some treatment beat control on the primary metric significantly, in the good direction.
    primary_win: bool | None = None
    primary_winner: str | None = Field(default=None, max_length=64)
    progress: float | None = None
    # Stopped before the planned sample or the planned duration was reached.
    stopped_early: bool = False
    error: str | None = Field(default=None, max_length=1000)
    snapshot: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    taken_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class OutcomePublic(BaseModel):
    experiment: str
    phase: int
    recommendation: str | None
    recommended_variant: str | None
    srm_mismatch: bool | None
    primary_win: bool | None
    primary_winner: str | None
    progress: float | None
    stopped_early: bool
    error: str | None
    taken_at: datetime


class MonthCount(BaseModel):
    month: str = PField(description="YYYY-MM (UTC)")
    count: int


class Outcomes(BaseModel):
    concluded: int
    counts: dict[str, int] = PField(description="ship / roll_back / inconclusive")
    shares: dict[str, float | None]


class Rate(BaseModel):
    numerator: int
    denominator: int
    share: float | None = PField(description="numerator / denominator; null when it is 0")


class Durations(BaseModel):
    experiments: int = PField(description="stopped or concluded with a planned duration")
    median_planned_days: float | None
    median_actual_days: float | None


class InsightsPublic(BaseModel):
    computed_at: datetime
    experiments_by_status: dict[str, int]
    concluded_per_month: list[MonthCount]
    outcomes: Outcomes
    win_rate: Rate = PField(description="concluded experiments whose primary metric won")
    duration: Durations
    srm: Rate = PField(description="started experiments with a sample ratio mismatch")
    followed_recommendation: Rate = PField(
        description="concluded experiments whose decision followed the recommendation at stop"
    )
    stopped_early: int
