"""Snapshot tables and the response schemas of the snapshot routes (``product.md`` §12)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel
from pydantic import Field as PField
from sqlalchemy import JSON, BigInteger, Index, Text
from sqlmodel import Column, Field, SQLModel

from service.analysis.models import EstimatePublic, ResultsPublic, SequentialPublic
from service.db import UTCDateTime, utcnow

SnapshotState = Literal["pending", "ready", "failed"]
Trigger = Literal["schedule", "manual", "stop", "read"]

# ---------------------------------------------------------------------------------------- tables


class ResultsSnapshot(SQLModel, table=True):
    """One refresh of an experiment phase's results: the §6 contract, the sufficient statistics
    it came from (``data``), its slices and series, and the cut of the data it saw."""

    __tablename__ = "results_snapshot"
    __table_args__ = (Index("ix_results_snapshot_latest", "experiment_id", "phase", "state", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiment.id", ondelete="CASCADE")
    phase: int
    state: str = Field(max_length=20)
    trigger: str = Field(max_length=20)
    requested_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    computed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    data_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    # The largest exposure / conversion id committed when the refresh read the data.
    exposure_watermark: int | None = Field(default=None, sa_column=Column(BigInteger))
    conversion_watermark: int | None = Field(default=None, sa_column=Column(BigInteger))
    fingerprint: str | None = Field(default=None, max_length=64)
    results: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    data: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    slices: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    timeseries: list[dict[str, Any]] | None = Field(
        default=None, sa_column=Column(JSON, nullable=True)
    )
    error: str | None = Field(default=None, max_length=2000)
    # The `GET …/results` body (JSON text), serialized once when the snapshot became ready, with
    # the status label as a placeholder (service.snapshots.STATUS_PLACEHOLDER).
    response: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class ResultsDay(SQLModel, table=True):
    """The point of one finished day of a phase, under one definition of the experiment: computed
    once (by the first refresh after the day ended, or the backfill) and reused."""

    __tablename__ = "results_day"

    experiment_id: int = Field(foreign_key="experiment.id", primary_key=True, ondelete="CASCADE")
    phase: int = Field(primary_key=True)
    day: int = Field(primary_key=True)
    fingerprint: str = Field(max_length=64, primary_key=True)
    until: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    computed_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    point: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class RefreshClaim(SQLModel, table=True):
    """The refresh running for an experiment (one at a time, across processes)."""

    __tablename__ = "results_refresh_claim"

    experiment_id: int = Field(foreign_key="experiment.id", primary_key=True, ondelete="CASCADE")
    snapshot_id: int
    token: str = Field(max_length=64)
    claimed_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


# --------------------------------------------------------------------------------------- schemas


class SnapshotResultsPublic(ResultsPublic):
    """The §6 results as stored by a refresh."""

    snapshot_id: int
    data_until: datetime | None = PField(
        description=(
            "the newest event the refresh saw: on the built-in store its received time (the"
            " analysis is cut there), on a data source the newest exposure or event time it"
            " holds for the experiment and its metrics"
        )
    )
    slices: SlicesPublic | None = None


class SnapshotSummary(BaseModel):
    snapshot_id: int
    phase: int
    state: SnapshotState
    trigger: Trigger
    requested_at: datetime
    computed_at: datetime | None
    data_until: datetime | None
    recommendation: str | None = None
    units: int | None = None
    error: str | None = None


class SnapshotList(BaseModel):
    experiment: str
    snapshots: list[SnapshotSummary]


class RefreshAccepted(BaseModel):
    experiment: str
    snapshot_id: int
    state: SnapshotState
    already_running: bool = PField(
        description="a refresh of this experiment was already under way: this is its snapshot"
    )


class PointComparison(BaseModel):
    variant: str
    control: str
    units: int
    control_units: int
    absolute: EstimatePublic
    relative: EstimatePublic
    p_value_adjusted: float | None
    sequential: SequentialPublic | None = PField(
        default=None, description="the confidence sequence, on a sequential design"
    )


class PointMetric(BaseModel):
    metric: str
    role: Literal["primary", "secondary", "guardrail"]
    comparisons: list[PointComparison]


class TimeseriesPoint(BaseModel):
    day: int = PField(description="1 = the phase's first 24 hours")
    until: datetime = PField(description="the end of the day (exclusive): the data's cut")
    final: bool = PField(description="the day had ended when the point was computed")
    units: dict[str, int]
    metrics: list[PointMetric]


class TimeseriesPublic(BaseModel):
    experiment: str
    phase: int
    snapshot_id: int
    method: Literal["fixed", "sequential", "group_sequential"]
    started_at: datetime | None
    points: list[TimeseriesPoint]


class SliceComparison(BaseModel):
    variant: str
    control: str
    units: int
    control_units: int
    absolute: EstimatePublic
    relative: EstimatePublic
    p_value_adjusted: float | None = PField(
        description="corrected over every slice × treatment of the metric (protocol correction)"
    )
    significant: bool
    warnings: list[str]


class SliceValue(BaseModel):
    value: str
    units: int
    comparisons: list[SliceComparison]


class SliceMetric(BaseModel):
    metric: str
    role: Literal["primary", "secondary", "guardrail"]
    slices: list[SliceValue]


class Heterogeneity(BaseModel):
    """Cochran's Q of the primary metric's absolute effect across the slices of a dimension."""

    metric: str
    variant: str
    statistic: float | None
    df: int
    p_value: float | None
    slices: int = PField(description="slices with a usable estimate (non-null standard error)")


class DimensionSlices(BaseModel):
    dimension: str
    values: dict[str, int] = PField(description="analysed units per slice value")
    metrics: list[SliceMetric]
    heterogeneity: list[Heterogeneity]


class SlicesPublic(BaseModel):
    exploratory: Literal[True] = True
    note: str = (
        "Slices are exploratory: corrected over all slices × treatments of each metric, they "
        "never drive the decision."
    )
    dimensions: list[DimensionSlices]


SnapshotResultsPublic.model_rebuild()
