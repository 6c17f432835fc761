"""Share links (``product.md`` §14): the table and its request and response schemas.

A share link opens one experiment's report, read-only, for someone without a key, until it
expires or an editor revokes it. Only the SHA-256 of the link's token is stored (like the keys);
the token is in the URL returned once, at creation.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PField
from sqlmodel import Column, Field, SQLModel

from service.db import UTCDateTime, utcnow
from service.text import RequestModel

# A quarter: long enough for a quarterly review, short enough that forgotten links die.
MAX_SHARE_HOURS = 24 * 90
DEFAULT_SHARE_HOURS = 24 * 7


class ShareLink(SQLModel, table=True):
    __tablename__ = "share_link"

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiment.id", index=True, ondelete="CASCADE")
    token_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=16)
    note: str | None = Field(default=None, max_length=500)
    created_by: str = Field(max_length=300)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    revoked_by: str | None = Field(default=None, max_length=300)
    last_used_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime, nullable=True)
    )
    uses: int = Field(default=0)


class ShareCreate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    expires_in_hours: int = PField(
        default=DEFAULT_SHARE_HOURS,
        ge=1,
        le=MAX_SHARE_HOURS,
        strict=True,  # a boolean or a numeric string is not a number of hours
        description=f"hours until the link stops working (1 to {MAX_SHARE_HOURS}, default "
        f"{DEFAULT_SHARE_HOURS})",
    )
    note: str | None = PField(
        default=None, max_length=500, description="who the link is for (shown in the list)"
    )


class SharePublic(BaseModel):
    id: int
    experiment: str
    prefix: str = PField(description="the first characters of the token, to tell links apart")
    note: str | None
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None
    last_used_at: datetime | None
    uses: int = PField(description="times the link opened the report (each one is audited)")
    active: bool = PField(description="neither expired nor revoked")


class ShareCreated(SharePublic):
    url: str = PField(
        description="the read-only link (path on this server); shown once: store it now"
    )


class ShareList(BaseModel):
    items: list[SharePublic]
