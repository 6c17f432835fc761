"""The browser-session table (``product.md`` §14): a session cookie stands for one API key."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Column, Field, SQLModel

from service.db import UTCDateTime, utcnow


class BrowserSession(SQLModel, table=True):
    """A signed-in browser: only the SHA-256 of its cookie token is kept, like the keys'.

    The session lives until ``expires_at``, until ``/logout`` (``revoked_at``), or until its key
    is revoked (checked at every request, so revoking the key ends its sessions at once).
    """

    __tablename__ = "browser_session"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    key_id: int = Field(foreign_key="api_key.id", index=True, ondelete="CASCADE")
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
