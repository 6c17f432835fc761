"""Experiment, phase, layer and audit tables, and the protocol schemas."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, StrictBool, model_validator, with_config
from pydantic import Field as PField
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy import JSON, Index, UniqueConstraint
from sqlmodel import Column, Field, SQLModel

# pydantic needs typing_extensions' TypedDict before Python 3.12.
from typing_extensions import TypedDict

from service.db import UTCDateTime, utcnow
from service.json_column import ValidatedJSON
from service.numbers import Range
from service.text import RequestModel

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


# ---------------------------------------------------------------------------- stored JSON forms
# What the protocol's JSON columns hold, as written from the request models below (VariantIn,
# GuardrailIn, Baseline, AnalysisSettings, ConcludeIn): checked by ValidatedJSON when written and
# read. Keys are optional (rows written before a field existed lack it) and other keys are kept.


@with_config(ConfigDict(extra="allow"))
class VariantRow(TypedDict, total=False):
    key: str
    name: str | None
    description: str | None
    weight: float
    is_control: bool


@with_config(ConfigDict(extra="allow"))
class GuardrailRow(TypedDict, total=False):
    metric: str
    margin: float


@with_config(ConfigDict(extra="allow"))
class BaselineRow(TypedDict, total=False):
    rate: float | None
    mean: float | None
    sd: float | None


@with_config(ConfigDict(extra="allow"))
class AnalysisRow(TypedDict, total=False):
    method: Literal["fixed", "sequential", "group_sequential"]
    correction: Literal["holm", "bh", "bonferroni", "none"]
    cuped: bool
    pre_period_days: int
    bayesian: bool
    prior_mean: float | None
    prior_sd: float | None
    srm_threshold: float
    sequential_n_star: int
    spending: Literal["obrien_fleming", "power"]
    rho: float | None


@with_config(ConfigDict(extra="allow"))
class DecisionRow(TypedDict, total=False):
    decision: str
    variant: str | None
    rationale: str
    decided_by: str
    decided_at: str  # ISO 8601


def variant_rows(variants: Sequence[BaseModel]) -> list[VariantRow]:
    """The stored form of request variants (:class:`VariantIn`)."""
    return [cast(VariantRow, v.model_dump(mode="json")) for v in variants]


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
    variants: list[VariantRow] = Field(
        sa_column=Column(ValidatedJSON(list[VariantRow]), nullable=False)
    )
    traffic_fraction: float = 1.0
    targeting: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    overrides: dict[str, str] = Field(
        default_factory=dict, sa_column=Column(ValidatedJSON(dict[str, str]), nullable=False)
    )
    primary_metric: str = Field(max_length=80)
    primary_mde: float
    secondary_metrics: list[str] = Field(
        default_factory=list, sa_column=Column(ValidatedJSON(list[str]), nullable=False)
    )
    guardrails: list[GuardrailRow] = Field(
        default_factory=list, sa_column=Column(ValidatedJSON(list[GuardrailRow]), nullable=False)
    )
    alpha: float = 0.05
    power: float = 0.8
    baseline: BaselineRow | None = Field(
        default=None, sa_column=Column(ValidatedJSON(BaselineRow), nullable=True)
    )
    expected_daily_units: float | None = None
    attribution_window_hours: float | None = None
    analysis: AnalysisRow = Field(sa_column=Column(ValidatedJSON(AnalysisRow), nullable=False))
    layer: str | None = Field(default=None, max_length=80, index=True)
    # Exposure attribute names the results are sliced by (product.md §12; migration 0006).
    dimensions: list[str] = Field(
        default_factory=list, sa_column=Column(ValidatedJSON(list[str]), nullable=True)
    )
    # The data source analysed (product.md §13; migration 0009); None: the built-in store.
    data_source: str | None = Field(default=None, max_length=80)
    layer_allocation: float | None = None
    layer_range: list[float] | None = Field(
        default=None, sa_column=Column(ValidatedJSON(list[float]), nullable=True)
    )
    tags: list[str] = Field(
        default_factory=list, sa_column=Column(ValidatedJSON(list[str]), nullable=False)
    )
    notes: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    status: str = Field(default=Status.draft.value, max_length=20, index=True)
    seed: str = Field(max_length=64)
    phase: int = 1
    sample_size_per_variant: int | None = None
    planned_duration_days: int | None = None
    decision: DecisionRow | None = Field(
        default=None, sa_column=Column(ValidatedJSON(DecisionRow), nullable=True)
    )
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
    variants: list[VariantRow] = Field(
        sa_column=Column(ValidatedJSON(list[VariantRow]), nullable=False)
    )
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

# The range of every number of the protocol: what a real experiment needs and what the engine
# (stats.power, the analysis) computes without overflow. Pydantic's ge/le reach the OpenAPI file
# as minimum/maximum, and a value outside gets a 422 naming the field and the bound.
MIN_FRACTION = 1e-4  # a share of traffic (0.01 %): smaller splits never reach a sample
MAX_RELATIVE_EFFECT = 10.0  # a lift or harm of 1,000 %
MIN_RELATIVE_EFFECT = 1e-4  # 0.01 %: below it no experiment has the units (see MAX_SAMPLE_SIZE)
MIN_ALPHA = 1e-6
MAX_POWER = 0.9999
MIN_RATE = 1e-6  # baseline conversion rates in [1e-6, 1 - 1e-6]
MAX_ABS_MEAN = 1e12  # the bound on event values (product.md §5)
MIN_SD = 1e-9
MAX_DAILY_UNITS = 1e10  # more than every person online
MIN_WINDOW_HOURS = 0.01  # 36 seconds
MAX_WINDOW_HOURS = 87_600.0  # ten years
MAX_PRIOR_MEAN = 10.0  # a normal prior on the relative lift
MIN_PRIOR_SD, MAX_PRIOR_SD = 1e-4, 100.0
MIN_SRM_THRESHOLD = 1e-9
MAX_HOLDOUT = 0.99
# Targeting trees: depth of nested all/any groups, and the length of each list in them.
MAX_TARGETING_DEPTH = 8
MAX_TARGETING_LIST = 1000
MAX_TARGETING_NODES = 2000

_NUMBER = PField(strict=True, allow_inf_nan=False)
Fraction = Annotated[float, _NUMBER, Range(MIN_FRACTION, 1)]
RelativeEffect = Annotated[float, _NUMBER, Range(MIN_RELATIVE_EFFECT, MAX_RELATIVE_EFFECT)]
Alpha = Annotated[float, _NUMBER, Range(MIN_ALPHA, 0.5, hi_open=True)]
Power = Annotated[float, _NUMBER, Range(0.5, MAX_POWER)]
DailyUnits = Annotated[float, _NUMBER, Range(1, MAX_DAILY_UNITS)]
WindowHours = Annotated[
    float,
    _NUMBER,
    Range(MIN_WINDOW_HOURS, MAX_WINDOW_HOURS),
    PField(description="hours after a unit's first exposure during which its conversions count"),
]
Rate = Annotated[float, _NUMBER, Range(MIN_RATE, 1 - MIN_RATE)]
Mean = Annotated[float, _NUMBER, Range(-MAX_ABS_MEAN, MAX_ABS_MEAN)]
Sd = Annotated[float, _NUMBER, Range(MIN_SD, MAX_ABS_MEAN)]
PriorMean = Annotated[float, _NUMBER, Range(-MAX_PRIOR_MEAN, MAX_PRIOR_MEAN)]
PriorSd = Annotated[float, _NUMBER, Range(MIN_PRIOR_SD, MAX_PRIOR_SD)]
SrmThreshold = Annotated[float, _NUMBER, Range(MIN_SRM_THRESHOLD, 0.5, hi_open=True)]
Holdout = Annotated[float, _NUMBER, Range(0, MAX_HOLDOUT)]


def _targeting_shape(tree: dict[str, Any] | None) -> dict[str, Any] | None:
    """Bound a targeting tree's depth, list lengths and size (a deep tree is a 500 elsewhere)."""
    if tree is None:
        return None
    nodes = 0

    def walk(node: Any, depth: int, path: str) -> None:
        nonlocal nodes
        nodes += 1
        if nodes > MAX_TARGETING_NODES:
            raise ValueError(
                f"the tree has more than {MAX_TARGETING_NODES} conditions and values; "
                "split the audience with fewer conditions or an `in` list"
            )
        if depth > MAX_TARGETING_DEPTH:
            raise ValueError(
                f"{path} nests groups deeper than {MAX_TARGETING_DEPTH} levels; flatten the "
                "all/any groups"
            )
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, depth + (k in ("all", "any")), f"{path}.{k}")
        elif isinstance(node, list):
            if len(node) > MAX_TARGETING_LIST:
                raise ValueError(
                    f"{path} lists {len(node)} items; at most {MAX_TARGETING_LIST} are allowed"
                )
            for i, item in enumerate(node):
                walk(item, depth, f"{path}[{i}]")

    walk(tree, 0, "targeting")
    return tree


Targeting = Annotated[
    dict[str, Any],
    AfterValidator(_targeting_shape),
    PField(
        description="condition tree: {all: [...]}, {any: [...]} or "
        "{attribute, op, value} with op in eq, neq, in, not_in, gt, gte, lt, lte, semver_*; "
        f"groups nest at most {MAX_TARGETING_DEPTH} deep, lists hold at most "
        f"{MAX_TARGETING_LIST} items"
    ),
]
MetricKey = Annotated[str, PField(min_length=1, max_length=80)]
NonEmpty = Annotated[str, PField(min_length=1, max_length=5000, pattern=r"\S")]
UnitId = Annotated[str, PField(min_length=1, max_length=200)]
VariantKey = Annotated[str, PField(pattern=VARIANT_KEY_PATTERN)]
Tag = Annotated[str, PField(min_length=1, max_length=50)]
# An optional field that may be omitted but not sent as null (None only as the "unset" default).
NoNull = SkipJsonSchema[None]


class VariantIn(RequestModel):
    model_config = ConfigDict(extra="forbid")

    key: str = PField(pattern=VARIANT_KEY_PATTERN)
    name: str | None = PField(default=None, max_length=200)
    description: str | None = PField(default=None, max_length=2000)
    weight: Fraction
    is_control: StrictBool = False


class StructuredHypothesis(RequestModel):
    model_config = ConfigDict(extra="forbid")

    change: NonEmpty
    population: NonEmpty
    expected_outcome: NonEmpty
    rationale: NonEmpty


class PrimaryMetricIn(RequestModel):
    model_config = ConfigDict(extra="forbid")

    metric: MetricKey
    mde: RelativeEffect = PField(description="minimum detectable relative effect")


class GuardrailIn(RequestModel):
    model_config = ConfigDict(extra="forbid")

    metric: MetricKey
    margin: RelativeEffect = PField(description="largest tolerated relative harm")


class Baseline(RequestModel):
    model_config = ConfigDict(extra="forbid")

    rate: Rate | None = None
    mean: Mean | None = None
    sd: Sd | None = None


class AnalysisSettings(RequestModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["fixed", "sequential", "group_sequential"] = "fixed"
    correction: Literal["holm", "bh", "bonferroni", "none"] = "holm"
    cuped: StrictBool = True
    pre_period_days: int = PField(default=14, ge=1, le=365, strict=True)
    bayesian: StrictBool = False
    prior_mean: PriorMean | None = None
    prior_sd: PriorSd | None = None
    srm_threshold: SrmThreshold = 0.001
    sequential_n_star: int = PField(default=5000, ge=1, le=10_000_000, strict=True)
    spending: Literal["obrien_fleming", "power"] = PField(
        default="obrien_fleming",
        description="group_sequential: Lan-DeMets spending function (power: alpha * t^rho)",
    )
    rho: float | None = PField(default=None, gt=0, le=20, strict=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _spending_rho(self) -> AnalysisSettings:
        if self.spending == "power" and self.rho is None:
            raise ValueError("rho: the power spending function alpha * t^rho needs rho > 0")
        if self.spending != "power" and self.rho is not None:
            raise ValueError("rho applies only to spending: power")
        return self


class ProtocolFields(RequestModel):
    """The protocol fields shared by create and update."""

    model_config = ConfigDict(extra="forbid")

    title: str = PField(min_length=1, max_length=300, pattern=r"\S")
    owner: str = PField(min_length=1, max_length=200, pattern=r"\S")
    description: str | None = PField(default=None, max_length=10_000)
    hypothesis: NonEmpty | StructuredHypothesis
    randomization_unit: str = PField(default="user_id", pattern=ATTRIBUTE_PATTERN)
    variants: list[VariantIn] = PField(min_length=2, max_length=20)
    traffic_fraction: Fraction = 1.0
    targeting: Targeting | None = None
    overrides: dict[UnitId, VariantKey] = PField(default_factory=dict, max_length=1000)
    primary_metric: PrimaryMetricIn
    secondary_metrics: list[MetricKey] = PField(default_factory=list, max_length=20)
    guardrails: list[GuardrailIn] = PField(default_factory=list, max_length=20)
    alpha: Alpha = 0.05
    power: Power = 0.8
    baseline: Baseline | None = None
    expected_daily_units: DailyUnits | None = None
    attribution_window_hours: WindowHours | None = None
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
    data_source: str | None = PField(
        default=None,
        pattern=KEY_PATTERN,
        description="data source key (§13, /v1/data-sources); default the built-in store",
    )


class ExperimentCreate(ProtocolFields):
    key: str = PField(pattern=KEY_PATTERN, description="slug, unique, immutable")
    template: str | None = PField(default=None, pattern=KEY_PATTERN)


class ExperimentUpdate(RequestModel):
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
    targeting: Targeting | None = None
    overrides: Annotated[dict[UnitId, VariantKey], PField(max_length=1000)] | NoNull = None
    primary_metric: PrimaryMetricIn | NoNull = None
    secondary_metrics: Annotated[list[MetricKey], PField(max_length=20)] | NoNull = None
    guardrails: Annotated[list[GuardrailIn], PField(max_length=20)] | NoNull = None
    alpha: Alpha | NoNull = None
    power: Power | NoNull = None
    baseline: Baseline | None = None
    expected_daily_units: DailyUnits | None = None
    attribution_window_hours: WindowHours | None = None
    analysis: AnalysisSettings | NoNull = None
    layer: str | None = PField(default=None, pattern=KEY_PATTERN)
    layer_allocation: Fraction | None = None
    tags: Annotated[list[Tag], PField(max_length=50)] | NoNull = None
    dimensions: Dimensions | NoNull = None
    data_source: str | None = PField(default=None, pattern=KEY_PATTERN)


class TransitionIn(RequestModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = PField(default=None, max_length=5000)


class ConcludeIn(RequestModel):
    """The decision recorded for a stopped experiment."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "decision": "ship",
                    "variant": "treatment",
                    "rationale": "Purchases rose 4.1 % (95 % CI 1.2 % to 7.0 %); no guardrail "
                    "was harmed.",
                },
                {
                    "decision": "inconclusive",
                    "rationale": "The interval spans the minimum detectable effect; we keep the "
                    "control and revisit with a larger audience.",
                },
            ]
        },
    )

    decision: Literal["ship", "roll_back", "inconclusive"] = PField(
        description="`ship` a variant, `roll_back` to the control, or `inconclusive`"
    )
    variant: VariantKey | None = PField(
        default=None,
        description="the variant shipped: required when decision is `ship`, refused otherwise",
    )
    rationale: NonEmpty = PField(
        description="why: the evidence behind the decision (kept in the audit trail)"
    )


class PhaseCreate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    variants: list[VariantIn] | None = PField(default=None, min_length=2, max_length=20)
    traffic_fraction: Fraction | None = None
    reason: NonEmpty


class NoteIn(RequestModel):
    model_config = ConfigDict(extra="forbid")

    text: NonEmpty


# Response shapes of the protocol's parts: plain models, so that a row stored under older, looser
# rules is still shown (the request rules apply to what comes in, not to what was stored).


class StructuredHypothesisOut(BaseModel):
    change: str
    population: str
    expected_outcome: str
    rationale: str


class PrimaryMetricOut(BaseModel):
    metric: str
    mde: float


class GuardrailOut(BaseModel):
    metric: str
    margin: float


class BaselineOut(BaseModel):
    rate: float | None = None
    mean: float | None = None
    sd: float | None = None


class AnalysisSettingsOut(BaseModel):
    method: str = "fixed"
    correction: str = "holm"
    cuped: bool = True
    pre_period_days: int = 14
    bayesian: bool = False
    prior_mean: float | None = None
    prior_sd: float | None = None
    srm_threshold: float = 0.001
    sequential_n_star: int = 5000


class ProtocolWarning(BaseModel):
    """Something the protocol leaves open that the reader should know (not an error)."""

    code: str
    message: str


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
    hypothesis: str | StructuredHypothesisOut
    randomization_unit: str
    variants: list[VariantOut]
    traffic_fraction: float
    targeting: dict[str, Any] | None
    overrides: dict[str, str]
    primary_metric: PrimaryMetricOut
    secondary_metrics: list[str]
    guardrails: list[GuardrailOut]
    alpha: float
    power: float
    baseline: BaselineOut | None
    expected_daily_units: float | None
    attribution_window_hours: float | None
    analysis: AnalysisSettingsOut
    layer: str | None
    layer_allocation: float | None
    layer_range: list[float] | None
    tags: list[str]
    dimensions: list[str] = PField(default_factory=list)
    data_source: str | None = None
    notes: list[dict[str, Any]]
    status: Status
    phase: int
    phases: list[PhaseOut]
    sample_size_per_variant: int | None
    planned_duration_days: int | None
    warnings: list[ProtocolWarning] = PField(
        default_factory=list,
        description="what the protocol leaves open, e.g. `no_baseline`: without a baseline "
        "the sample size and planned duration stay null",
    )
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


class LayerCreate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    key: str = PField(pattern=KEY_PATTERN)
    description: str | None = PField(default=None, max_length=2000)
    holdout_fraction: Holdout = 0.0


class LayerUpdate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = PField(default=None, max_length=2000)
    holdout_fraction: Holdout | NoNull = None


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
