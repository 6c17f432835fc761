"""Webhook subscription and delivery (outbox) tables, and schemas."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StrictBool
from pydantic import Field as PField
from sqlalchemy import JSON, Index, Text
from sqlmodel import Column, Field, SQLModel

from service.db import UTCDateTime, utcnow
from service.text import RequestModel


class EventType(StrEnum):
    experiment_started = "experiment.started"
    experiment_paused = "experiment.paused"
    experiment_resumed = "experiment.resumed"
    experiment_stopped = "experiment.stopped"
    experiment_concluded = "experiment.concluded"
    alert_srm = "alert.srm"
    alert_guardrail_failed = "alert.guardrail_failed"
    alert_decision_ready = "alert.decision_ready"
    alert_overdue = "alert.overdue"
    alert_stalled = "alert.stalled"
    alert_interaction = "alert.interaction"


class DeliveryStatus(StrEnum):
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"


# ---------------------------------------------------------------------------------------- tables


class WebhookSubscription(SQLModel, table=True):
    __tablename__ = "webhook_subscription"

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(max_length=2000)
    event_types: list[str] = Field(sa_column=Column(JSON, nullable=False))
    # Kept in clear: the service needs it to sign (Standard Webhooks symmetric signatures).
    secret: str = Field(max_length=100)
    description: str | None = Field(default=None, max_length=2000)
    active: bool = True
    created_by: str = Field(max_length=300)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class WebhookDelivery(SQLModel, table=True):
    """One message to one subscription: the outbox row and its delivery log."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        Index("ix_webhook_delivery_due", "status", "next_attempt_at"),
        Index("ix_webhook_delivery_subscription", "subscription_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    subscription_id: int = Field(foreign_key="webhook_subscription.id", ondelete="CASCADE")
    message_id: str = Field(max_length=64)
    event_type: str = Field(max_length=60)
    # The exact body that is signed and sent, so every retry sends the same bytes.
    body: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default=DeliveryStatus.pending.value, max_length=20)
    attempts: int = 0
    next_attempt_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    last_attempt_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime, nullable=True)
    )
    delivered_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime, nullable=True)
    )
    response_status: int | None = None
    last_error: str | None = Field(default=None, max_length=2000)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


# --------------------------------------------------------------------------------------- schemas

Url = Annotated[str, PField(min_length=8, max_length=2000, pattern=r"^https?://[^\s/?#]+\S*$")]


class WebhookCreate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    url: Url
    event_types: list[EventType] = PField(min_length=1, max_length=len(EventType))
    description: str | None = PField(default=None, max_length=2000)
    active: StrictBool = True


class WebhookUpdate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    url: Url | None = None
    event_types: list[EventType] | None = PField(
        default=None, min_length=1, max_length=len(EventType)
    )
    description: str | None = PField(default=None, max_length=2000)
    active: StrictBool | None = None


class WebhookPublic(BaseModel):
    id: int
    url: str
    event_types: list[EventType]
    description: str | None
    active: bool
    created_by: str
    created_at: datetime


class WebhookCreated(WebhookPublic):
    secret: str = PField(description="`whsec_` + base64; shown once, keep it to verify signatures")


class WebhookList(BaseModel):
    items: list[WebhookPublic]


class DeliveryOut(BaseModel):
    id: int
    message_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    response_status: int | None
    last_error: str | None
    created_at: datetime


class DeliveryList(BaseModel):
    items: list[DeliveryOut]
    total: int
    limit: int
    offset: int
