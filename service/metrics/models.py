"""Metric table and schemas."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, StrictBool, model_validator
from pydantic import Field as PField
from pydantic.json_schema import SkipJsonSchema
from sqlmodel import Column, Field, SQLModel

from service.db import UTCDateTime, utcnow
from service.numbers import Range
from service.text import RequestModel

KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]{2,79}$"
EVENT_PATTERN = r"^[A-Za-z0-9_.:\-/]{1,200}$"


class MetricType(StrEnum):
    binomial = "binomial"
    mean = "mean"
    ratio = "ratio"
    quantile = "quantile"


class Aggregation(StrEnum):
    sum = "sum"
    count = "count"  # type: ignore[assignment]  # shadows str.count, on purpose: the API value


class Metric(SQLModel, table=True):
    __tablename__ = "metric"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=80, unique=True)
    name: str = Field(max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    type: str = Field(max_length=20)
    event: str | None = Field(default=None, max_length=200)
    aggregation: str | None = Field(default=None, max_length=10)
    numerator_event: str | None = Field(default=None, max_length=200)
    denominator_event: str | None = Field(default=None, max_length=200)
    higher_is_better: bool = True
    winsorize_lower: float | None = None
    winsorize_upper: float | None = None
    quantile: float | None = None  # quantile metrics: the level in (0, 1)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


# Winsorization percentiles in [0.0001, 0.9999]: a narrower cut is no cut on any real sample.
MIN_PERCENTILE = 1e-4
Percentile = Annotated[
    float, PField(strict=True, allow_inf_nan=False), Range(MIN_PERCENTILE, 1 - MIN_PERCENTILE)
]
EventName = Annotated[str, PField(pattern=EVENT_PATTERN)]
# An optional field that may be omitted but not sent as null (None only as the "unset" default).
NoNull = SkipJsonSchema[None]


class MetricDefinition(RequestModel):
    """The fields that define what a metric measures (frozen once a live experiment uses it)."""

    model_config = ConfigDict(extra="forbid")

    type: MetricType
    event: EventName | None = PField(
        default=None, description="binomial and mean: the event name counted"
    )
    aggregation: Aggregation | None = PField(
        default=None,
        description="mean and quantile: per-unit `sum` of event values (default) or `count`",
    )
    numerator_event: EventName | None = PField(default=None, description="ratio only")
    denominator_event: EventName | None = PField(default=None, description="ratio only")
    higher_is_better: StrictBool = True
    winsorize_lower: Percentile | None = PField(
        default=None, description="cap per-unit values below this percentile, in (0, 1)"
    )
    winsorize_upper: Percentile | None = PField(
        default=None, description="cap per-unit values above this percentile, in (0, 1)"
    )
    quantile: Percentile | None = PField(
        default=None,
        description="quantile only: the level in (0, 1) of the per-unit values (0.9 = p90)",
    )

    @model_validator(mode="after")
    def _check_shape(self) -> Self:
        t = self.type
        if t is MetricType.quantile:
            if self.quantile is None:
                raise ValueError("a quantile metric needs `quantile`, the level in (0, 1)")
            if self.winsorize_lower is not None or self.winsorize_upper is not None:
                raise ValueError("quantile metrics are not winsorized; remove winsorize_*")
        elif self.quantile is not None:
            raise ValueError("quantile is only for quantile metrics; remove it")
        if t in (MetricType.binomial, MetricType.mean, MetricType.quantile):
            if self.event is None:
                raise ValueError(f"a {t.value} metric needs `event`, the event name it measures")
            if self.numerator_event is not None or self.denominator_event is not None:
                raise ValueError(
                    "numerator_event/denominator_event are only for ratio metrics; remove them"
                )
            if t is MetricType.binomial and self.aggregation is not None:
                raise ValueError("aggregation is only for mean metrics; remove it")
            if t in (MetricType.mean, MetricType.quantile) and self.aggregation is None:
                self.aggregation = Aggregation.sum
        else:
            if self.numerator_event is None or self.denominator_event is None:
                raise ValueError("a ratio metric needs both numerator_event and denominator_event")
            if self.event is not None or self.aggregation is not None:
                raise ValueError(
                    "a ratio metric takes numerator_event/denominator_event, not event"
                )
        if (
            self.winsorize_lower is not None
            and self.winsorize_upper is not None
            and self.winsorize_lower >= self.winsorize_upper
        ):
            raise ValueError("winsorize_lower must be below winsorize_upper")
        return self


class MetricCreate(MetricDefinition):
    key: str = PField(pattern=KEY_PATTERN, description="slug, unique, immutable")
    name: str = PField(min_length=1, max_length=200)
    description: str | None = PField(default=None, max_length=5000)


class MetricUpdate(RequestModel):
    """Fields that may change; the definition is frozen once a live experiment uses the metric.

    Fields whose schema has no ``null`` may be omitted but not set to null.
    """

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, PField(min_length=1, max_length=200)] | NoNull = None
    description: str | None = PField(default=None, max_length=5000)
    type: MetricType | NoNull = None
    event: EventName | None = None
    aggregation: Aggregation | None = None
    numerator_event: EventName | None = None
    denominator_event: EventName | None = None
    higher_is_better: StrictBool | NoNull = None
    winsorize_lower: Percentile | None = None
    winsorize_upper: Percentile | None = None
    quantile: Percentile | None = None


class MetricPublic(BaseModel):
    key: str
    name: str
    description: str | None
    type: MetricType
    event: str | None
    aggregation: Aggregation | None
    numerator_event: str | None
    denominator_event: str | None
    higher_is_better: bool
    winsorize_lower: float | None
    winsorize_upper: float | None
    quantile: float | None = None
    created_at: datetime
    updated_at: datetime


class MetricList(BaseModel):
    items: list[MetricPublic]
    total: int
    limit: int
    offset: int
