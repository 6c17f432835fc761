"""Experiment, phase, layer and audit tables, and the protocol schemas."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, StrictBool
from pydantic import Field as PField
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy import JSON, Index, UniqueConstraint
from sqlmodel import Column, Field, SQLModel

from service.db import UTCDateTime, utcnow

KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]{2,79}$"
VARIANT_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ATTRIBUTE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$"


def _unique_names(names: list[str]) -> list[str]:
    if len(set(names)) != len(names):
        raise ValueError("dimensions must be distinct attribute names")
    return names


# The exposure attributes results are sliced by (product.md §2, §12).
Dimensions = Annotated[
    list[Annotated[str, PField(pattern=ATTRIBUTE_PATTERN)]],
    PField(max_length=5),
    AfterValidator(_unique_names),
]


class Status(StrEnum):
    draft = "draft"
    running = "running"
    paused = "paused"
    stopped = "stopped"
    concluded = "concluded"
    archived = "archived"


# ---------------------------------------------------------------------------------------- tables


class Experiment(SQLModel, table=True):
    __tablename__ = "experiment"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=80, unique=True)
    title: str = Field(max_length=300)
    owner: str = Field(max_length=200, index=True)
    description: str | None = Field(default=None, max_length=10_000)
    hypothesis: Any = Field(sa_column=Column(JSON, nullable=False))
    randomization_unit: str = Field(default="user_id", max_length=100)
    variants: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    traffic_fraction: float = 1.0
    targeting: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    overrides: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    primary_metric: str = Field(max_length=80)
    primary_mde: float
    secondary_metrics: list[str] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    guardrails: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    alpha: float = 0.05
    power: float = 0.8
    baseline: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    expected_daily_units: float | None = None
    attribution_window_hours: float | None = None
    analysis: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    layer: str | None = Field(default=None, max_length=80, index=True)
    # Exposure attribute names the results are sliced by (product.md §12; migration 0006).
    dimensions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=True))
    layer_allocation: float | None = None
    layer_range: list[float] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    notes: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    status: str = Field(default=Status.draft.value, max_length=20, index=True)
    seed: str = Field(max_length=64)
    phase: int = 1
    sample_size_per_variant: int | None = None
    planned_duration_days: int | None = None
    decision: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    template: str | None = Field(default=None, max_length=80)
    template_version: int | None = None
    approved_by: str | None = Field(default=None, max_length=300)
    created_by: str = Field(max_length=300)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    started_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    stopped_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    concluded_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime, nullable=True)
    )


class ExperimentMetric(SQLModel, table=True):
    """Which metrics an experiment uses, and in which role (for lookups both ways)."""

    __tablename__ = "experiment_metric"
    __table_args__ = (Index("ix_experiment_metric_metric_key", "metric_key"),)

    experiment_id: int = Field(foreign_key="experiment.id", primary_key=True, ondelete="CASCADE")
    metric_key: str = Field(max_length=80, primary_key=True)
    role: str = Field(max_length=20)


class ExperimentPhase(SQLModel, table=True):
    """One randomization phase. Only the current phase is analysed."""

    __tablename__ = "experiment_phase"
    __table_args__ = (UniqueConstraint("experiment_id", "phase"),)

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiment.id", ondelete="CASCADE")
    phase: int
    variants: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    traffic_fraction: float
    reason: str | None = Field(default=None, max_length=2000)
    started_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    ended_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_entry"

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiment.id", index=True, ondelete="CASCADE")
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    actor: str = Field(max_length=300)
    action: str = Field(max_length=40)
    from_status: str | None = Field(default=None, max_length=20)
    to_status: str | None = Field(default=None, max_length=20)
    note: str | None = Field(default=None, max_length=5000)
    details: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class Layer(SQLModel, table=True):
    """A mutual-exclusion layer: experiments in it get disjoint slices of its hash space."""

    __tablename__ = "layer"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=80, unique=True)
    description: str | None = Field(default=None, max_length=2000)
    seed: str = Field(max_length=64)
    holdout_fraction: float = 0.0
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


# --------------------------------------------------------------------------------------- schemas

Fraction = Annotated[float, PField(gt=0, le=1, strict=True)]
PositiveFloat = Annotated[float, PField(gt=0, strict=True, allow_inf_nan=False)]
MetricKey = Annotated[str, PField(min_length=1, max_length=80)]
NonEmpty = Annotated[str, PField(min_length=1, max_length=5000, pattern=r"\S")]
UnitId = Annotated[str, PField(min_length=1, max_length=200)]
Tag = Annotated[str, PField(min_length=1, max_length=50)]
# An optional field that may be omitted but not sent as null (None only as the "unset" default).
NoNull = SkipJsonSchema[None]


class VariantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = PField(pattern=VARIANT_KEY_PATTERN)
    name: str | None = PField(default=None, max_length=200)
    description: str | None = PField(default=None, max_length=2000)
    weight: float = PField(gt=0, le=1, strict=True)
    is_control: StrictBool = False


class StructuredHypothesis(BaseModel):
    model_config = ConfigDict(extra="forbid")

    change: NonEmpty
    population: NonEmpty
    expected_outcome: NonEmpty
    rationale: NonEmpty


class PrimaryMetricIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: MetricKey
    mde: float = PField(
        gt=0, strict=True, allow_inf_nan=False, description="minimum detectable relative effect"
    )


class GuardrailIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: MetricKey
    margin: float = PField(
        gt=0, strict=True, allow_inf_nan=False, description="largest tolerated relative harm"
    )


class Baseline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rate: float | None = PField(default=None, gt=0, lt=1, strict=True)
    mean: float | None = PField(default=None, strict=True, allow_inf_nan=False)
    sd: float | None = PField(default=None, gt=0, strict=True, allow_inf_nan=False)


class AnalysisSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["fixed", "sequential"] = "fixed"
    correction: Literal["holm", "bh", "bonferroni", "none"] = "holm"
    cuped: StrictBool = True
    pre_period_days: int = PField(default=14, ge=1, le=365, strict=True)
    bayesian: StrictBool = False
    prior_mean: float | None = PField(default=None, strict=True, allow_inf_nan=False)
    prior_sd: float | None = PField(default=None, gt=0, strict=True, allow_inf_nan=False)
    srm_threshold: float = PField(default=0.001, gt=0, lt=0.5, strict=True)
    sequential_n_star: int = PField(default=5000, ge=1, le=10_000_000, strict=True)


class ProtocolFields(BaseModel):
    """The protocol fields shared by create and update."""

    model_config = ConfigDict(extra="forbid")

    title: str = PField(min_length=1, max_length=300, pattern=r"\S")
    owner: str = PField(min_length=1, max_length=200, pattern=r"\S")
    description: str | None = PField(default=None, max_length=10_000)
    hypothesis: NonEmpty | StructuredHypothesis
    randomization_unit: str = PField(default="user_id", pattern=ATTRIBUTE_PATTERN)
    variants: list[VariantIn] = PField(min_length=2, max_length=20)
    traffic_fraction: Fraction = 1.0
    targeting: dict[str, Any] | None = PField(
        default=None,
        description="condition tree: {all: [...]}, {any: [...]} or "
        "{attribute, op, value} with op in eq, neq, in, not_in, gt, gte, lt, lte, semver_*",
    )
    overrides: dict[Annotated[str, PField(min_length=1, max_length=200)], str] = PField(
        default_factory=dict, max_length=1000
    )
    primary_metric: PrimaryMetricIn
    secondary_metrics: list[MetricKey] = PField(default_factory=list, max_length=20)
    guardrails: list[GuardrailIn] = PField(default_factory=list, max_length=20)
    alpha: float = PField(default=0.05, gt=0, lt=0.5, strict=True)
    power: float = PField(default=0.8, ge=0.5, lt=1, strict=True)
    baseline: Baseline | None = None
    expected_daily_units: PositiveFloat | None = None
    attribution_window_hours: PositiveFloat | None = None
    analysis: AnalysisSettings = PField(default_factory=AnalysisSettings)
    layer: str | None = PField(default=None, pattern=KEY_PATTERN)
    layer_allocation: Fraction | None = PField(
        default=None, description="share of the layer's non-holdout space; default 0.5"
    )
    tags: list[Annotated[str, PField(min_length=1, max_length=50)]] = PField(
        default_factory=list, max_length=50
    )
    dimensions: Dimensions = PField(
        default_factory=list,
        description="up to 5 exposure attribute names to slice the results by (§12)",
    )


class ExperimentCreate(ProtocolFields):
    key: str = PField(pattern=KEY_PATTERN, description="slug, unique, immutable")
    template: str | None = PField(default=None, pattern=KEY_PATTERN)


class ExperimentUpdate(BaseModel):
    """A partial update. In `draft` everything may change; later only the always-editable fields.

    Fields whose schema has no ``null`` may be omitted but not set to null.
    """

    model_config = ConfigDict(extra="forbid")

    title: Annotated[str, PField(min_length=1, max_length=300, pattern=r"\S")] | NoNull = None
    owner: Annotated[str, PField(min_length=1, max_length=200, pattern=r"\S")] | NoNull = None
    description: str | None = PField(default=None, max_length=10_000)
    hypothesis: NonEmpty | StructuredHypothesis | NoNull = None
    randomization_unit: Annotated[str, PField(pattern=ATTRIBUTE_PATTERN)] | NoNull = None
    variants: Annotated[list[VariantIn], PField(min_length=2, max_length=20)] | NoNull = None
    traffic_fraction: Fraction | NoNull = None
    targeting: dict[str, Any] | None = None
    overrides: Annotated[dict[UnitId, str], PField(max_length=1000)] | NoNull = None
    primary_metric: PrimaryMetricIn | NoNull = None
    secondary_metrics: Annotated[list[MetricKey], PField(max_length=20)] | NoNull = None
    guardrails: Annotated[list[GuardrailIn], PField(max_length=20)] | NoNull = None
    alpha: Annotated[float, PField(gt=0, lt=0.5, strict=True)] | NoNull = None
    power: Annotated[float, PField(ge=0.5, lt=1, strict=True)] | NoNull = None
    baseline: Baseline | None = None
    expected_daily_units: PositiveFloat | None = None
    attribution_window_hours: PositiveFloat | None = None
    analysis: AnalysisSettings | NoNull = None
    layer: str | None = PField(default=None, pattern=KEY_PATTERN)
    layer_allocation: Fraction | None = None
    tags: Annotated[list[Tag], PField(max_length=50)] | NoNull = None
    dimensions: Dimensions | NoNull = None


class TransitionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = PField(default=None, max_length=5000)


class ConcludeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["ship", "roll_back", "inconclusive"]
    variant: str | None = PField(default=None, description="required when decision is `ship`")
    rationale: NonEmpty


class PhaseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variants: list[VariantIn] | None = PField(default=None, min_length=2, max_length=20)
    traffic_fraction: Fraction | None = None
    reason: NonEmpty


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: NonEmpty


class VariantOut(BaseModel):
    key: str
    name: str | None = None
    description: str | None = None
    weight: float
    is_control: bool


class PhaseOut(BaseModel):
    phase: int
    variants: list[VariantOut]
    traffic_fraction: float
    reason: str | None
    started_at: datetime | None
    ended_at: datetime | None


class DecisionOut(BaseModel):
    decision: str
    variant: str | None
    rationale: str
    decided_by: str
    decided_at: datetime


class ExperimentPublic(BaseModel):
    key: str
    title: str
    owner: str
    description: str | None
    hypothesis: str | StructuredHypothesis
    randomization_unit: str
    variants: list[VariantOut]
    traffic_fraction: float
    targeting: dict[str, Any] | None
    overrides: dict[str, str]
    primary_metric: PrimaryMetricIn
    secondary_metrics: list[str]
    guardrails: list[GuardrailIn]
    alpha: float
    power: float
    baseline: Baseline | None
    expected_daily_units: float | None
    attribution_window_hours: float | None
    analysis: AnalysisSettings
    layer: str | None
    layer_allocation: float | None
    layer_range: list[float] | None
    tags: list[str]
    dimensions: list[str] = PField(default_factory=list)
    notes: list[dict[str, Any]]
    status: Status
    phase: int
    phases: list[PhaseOut]
    sample_size_per_variant: int | None
    planned_duration_days: int | None
    decision: DecisionOut | None
    template: str | None
    template_version: int | None
    approved_by: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    stopped_at: datetime | None
    concluded_at: datetime | None


class ExperimentList(BaseModel):
    items: list[ExperimentPublic]
    total: int
    limit: int
    offset: int


class AuditEntryOut(BaseModel):
    at: datetime
    actor: str
    action: str
    from_status: str | None
    to_status: str | None
    note: str | None
    details: dict[str, Any] | None


class AuditList(BaseModel):
    items: list[AuditEntryOut]


class LayerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = PField(pattern=KEY_PATTERN)
    description: str | None = PField(default=None, max_length=2000)
    holdout_fraction: float = PField(default=0.0, ge=0, lt=1, strict=True)


class LayerUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = PField(default=None, max_length=2000)
    holdout_fraction: Annotated[float, PField(ge=0, lt=1, strict=True)] | NoNull = None


class LayerExperimentOut(BaseModel):
    key: str
    status: Status
    layer_range: list[float] | None


class LayerPublic(BaseModel):
    key: str
    description: str | None
    holdout_fraction: float
    experiments: list[LayerExperimentOut]


class LayerList(BaseModel):
    items: list[LayerPublic]
