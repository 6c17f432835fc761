"""Template tables (a key and its immutable versions) and schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StrictBool
from pydantic import Field as PField
from sqlalchemy import JSON, UniqueConstraint
from sqlmodel import Column, Field, SQLModel

from service.db import UTCDateTime, utcnow
from service.experiments.models import (
    KEY_PATTERN,
    Alpha,
    MetricKey,
    Power,
    RelativeEffect,
    SrmThreshold,
    WindowHours,
)
from service.text import RequestModel

# ---------------------------------------------------------------------------------------- tables


class ProtocolTemplate(SQLModel, table=True):
    """A template key; its content lives in immutable :class:`ProtocolTemplateVersion` rows."""

    __tablename__ = "protocol_template"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=80, unique=True)
    # The organisation default (at most one): applies to experiments that name no template.
    is_default: bool = False
    latest_version: int = 1
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class ProtocolTemplateVersion(SQLModel, table=True):
    """One version of a template. Never updated: experiments keep the version they were registered
    under."""

    __tablename__ = "protocol_template_version"
    __table_args__ = (UniqueConstraint("template_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    template_id: int = Field(foreign_key="protocol_template.id", ondelete="CASCADE")
    version: int
    name: str = Field(max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    defaults: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    rules: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_by: str = Field(max_length=300)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


# --------------------------------------------------------------------------------------- schemas


class AnalysisDefaults(RequestModel):
    """Analysis settings a template fills in when the experiment does not set them."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["fixed", "sequential", "group_sequential"] | None = None
    correction: Literal["holm", "bh", "bonferroni", "none"] | None = None
    cuped: StrictBool | None = None
    pre_period_days: int | None = PField(default=None, ge=1, le=365, strict=True)
    bayesian: StrictBool | None = None
    srm_threshold: SrmThreshold | None = None
    sequential_n_star: int | None = PField(default=None, ge=1, le=10_000_000, strict=True)


class TemplateDefaults(RequestModel):
    model_config = ConfigDict(extra="forbid")

    alpha: Alpha | None = None
    power: Power | None = None
    attribution_window_hours: WindowHours | None = None
    analysis: AnalysisDefaults = PField(default_factory=AnalysisDefaults)


class RequiredGuardrail(RequestModel):
    model_config = ConfigDict(extra="forbid")

    metric: MetricKey
    max_margin: RelativeEffect = PField(description="the guardrail margin may not exceed this")


class TemplateRules(RequestModel):
    model_config = ConfigDict(extra="forbid")

    required_guardrails: list[RequiredGuardrail] = PField(default_factory=list, max_length=20)
    minimum_duration_days: int | None = PField(default=None, ge=1, le=3650, strict=True)
    allowed_primary_metrics: list[MetricKey] | None = PField(default=None, max_length=200)
    require_structured_hypothesis: StrictBool = False
    max_secondary_metrics: int | None = PField(default=None, ge=0, le=20, strict=True)
    approval_required: StrictBool = PField(
        default=False,
        description="start needs POST /v1/experiments/{key}/approve by another editor",
    )


class TemplateContent(RequestModel):
    model_config = ConfigDict(extra="forbid")

    name: str = PField(min_length=1, max_length=200, pattern=r"\S")
    description: str | None = PField(default=None, max_length=5000)
    defaults: TemplateDefaults = PField(default_factory=TemplateDefaults)
    rules: TemplateRules = PField(default_factory=TemplateRules)


class TemplateCreate(TemplateContent):
    key: str = PField(pattern=KEY_PATTERN)
    is_default: StrictBool = False


class TemplateUpdate(TemplateContent):
    """A full new version of the template (versions are immutable)."""

    is_default: StrictBool | None = None


class TemplatePublic(BaseModel):
    key: str
    version: int
    latest_version: int
    is_default: bool
    name: str
    description: str | None
    defaults: TemplateDefaults
    rules: TemplateRules
    created_by: str
    created_at: datetime


class TemplateList(BaseModel):
    items: list[TemplatePublic]


class ApproveIn(RequestModel):
    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, PField(max_length=5000)] | None = None
