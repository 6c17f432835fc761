"""Share links: create, list, revoke, and open (``product.md`` §14).

A link is ``/share/<token>``: the token is 256 random bits, stored as its SHA-256 (like the API
keys), shown once in the creation's answer. Opening it reads one experiment's report and nothing
else; it stops working at ``expires_at`` or when an editor revokes it. Creation, revocation and
every use write an entry in the experiment's audit trail (actions ``share_created``,
``share_revoked``, ``share_used``), and every use counts in ``uses``/``last_used_at``.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from service.auth import hash_key
from service.db import utcnow
from service.errors import NotFoundError
from service.experiments.models import Experiment
from service.experiments.service import audit, get_row
from service.reports.models import ShareCreate, ShareCreated, ShareLink, ShareList, SharePublic

__all__ = ["create_share", "list_shares", "open_share", "revoke_share", "share_path"]

PREFIX = "sh_"


def share_path(token: str) -> str:
    return f"/share/{token}"


def _public(row: ShareLink, key: str, now: datetime) -> SharePublic:
    assert row.id is not None
    return SharePublic(
        id=row.id,
        experiment=key,
        prefix=row.prefix,
        note=row.note,
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by,
        last_used_at=row.last_used_at,
        uses=row.uses,
        active=row.revoked_at is None and row.expires_at > now,
    )


def create_share(session: Session, key: str, body: ShareCreate, actor: str) -> ShareCreated:
    """A new link to the report of ``key``; the caller commits (the token is shown once)."""
    exp = get_row(session, key)
    assert exp.id is not None
    now = utcnow()
    token = PREFIX + secrets.token_urlsafe(32)
    row = ShareLink(
        experiment_id=exp.id,
        token_hash=hash_key(token),
        prefix=token[:10],
        note=body.note,
        created_by=actor,
        created_at=now,
        expires_at=now + timedelta(hours=body.expires_in_hours),
    )
    session.add(row)
    session.flush()
    audit(
        session,
        exp,
        actor,
        "share_created",
        note=body.note,
        details={"share_id": row.id, "expires_at": row.expires_at.isoformat()},
    )
    return ShareCreated(**_public(row, exp.key, now).model_dump(), url=share_path(token))


def list_shares(session: Session, key: str) -> ShareList:
    """Every link of the experiment, newest first (revoked and expired ones too)."""
    exp = get_row(session, key)
    rows = session.exec(
        select(ShareLink)
        .where(ShareLink.experiment_id == exp.id)
        .order_by(col(ShareLink.id).desc())
    ).all()
    now = utcnow()
    return ShareList(items=[_public(r, exp.key, now) for r in rows])


def revoke_share(session: Session, key: str, share_id: int, actor: str) -> SharePublic:
    """Revoke a link (idempotent); the caller commits."""
    exp = get_row(session, key)
    row = session.get(ShareLink, share_id)
    if row is None or row.experiment_id != exp.id:
        raise NotFoundError(f"Experiment '{key}' has no share link {share_id}.")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        row.revoked_by = actor
        session.add(row)
        audit(session, exp, actor, "share_revoked", details={"share_id": share_id})
    return _public(row, exp.key, utcnow())


def find_share(session: Session, token: str) -> tuple[ShareLink, Experiment] | None:
    """The live link of a token and its experiment (None: unknown, expired or revoked)."""
    if not token.startswith(PREFIX):
        return None
    digest = hash_key(token)
    row = session.exec(select(ShareLink).where(ShareLink.token_hash == digest)).first()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    if row.revoked_at is not None or row.expires_at <= utcnow():
        return None
    exp = session.get(Experiment, row.experiment_id)
    if exp is None:
        return None
    return row, exp


def open_share(session: Session, token: str, client: str) -> str | None:
    """Record one use of a live link and return its experiment's key; the caller commits."""
    found = find_share(session, token)
    if found is None:
        return None
    row, exp = found
    row.uses += 1
    row.last_used_at = utcnow()
    session.add(row)
    audit(
        session,
        exp,
        f"share link {row.prefix}… (id {row.id})",
        "share_used",
        details={"share_id": row.id, "client": client[:100]},
    )
    return exp.key
