"""API key rules: creation, hashing, lookup in constant time, revocation, bootstrap."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

from sqlmodel import Session, select

from service.db import utcnow
from service.errors import ConflictError, NotFoundError
from service.keys.models import ApiKey, ApiKeyCreated, ApiKeyPublic, Role

log = logging.getLogger("trialbook")

KEY_PREFIX = "tb_"


def hash_key(key: str) -> str:
    """SHA-256 of the key (keys are 256-bit random tokens, so a fast hash is enough)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key_token() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def to_public(row: ApiKey) -> ApiKeyPublic:
    assert row.id is not None
    return ApiKeyPublic(
        id=row.id,
        name=row.name,
        role=Role(row.role),
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def create_key(
    session: Session, *, name: str, role: Role, token: str | None = None
) -> ApiKeyCreated:
    """Store a new key (hashed) and return it with its secret, shown this once."""
    token = token or new_key_token()
    row = ApiKey(name=name, role=role.value, key_hash=hash_key(token), prefix=token[:10])
    session.add(row)
    session.commit()
    session.refresh(row)
    return ApiKeyCreated(**to_public(row).model_dump(), key=token)


def authenticate(session: Session, token: str) -> ApiKey | None:
    """Find the active key for a presented token.

    The lookup is by hash (indexed); the final comparison is :func:`hmac.compare_digest` so the
    check itself does not leak timing.
    """
    digest = hash_key(token)
    row = session.exec(select(ApiKey).where(ApiKey.key_hash == digest)).first()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.key_hash, digest):
        return None
    return row


def list_keys(session: Session) -> list[ApiKeyPublic]:
    rows = session.exec(select(ApiKey).order_by(ApiKey.id)).all()  # type: ignore[arg-type]
    return [to_public(r) for r in rows]


def revoke_key(session: Session, key_id: int, *, caller_key_id: int) -> ApiKeyPublic:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFoundError(f"No API key with id {key_id}.")
    if key_id == caller_key_id:
        raise ConflictError(
            "An admin cannot revoke the key it is calling with; revoke it with another admin key.",
            code="revoke_own_key",
        )
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        session.commit()
        session.refresh(row)
    return to_public(row)


def bootstrap_admin(session: Session, token: str | None) -> bool:
    """Make ``token`` the first admin key when no active admin key exists (True if stored)."""
    if not token:
        return False
    exists = session.exec(
        select(ApiKey).where(ApiKey.role == Role.admin.value, ApiKey.revoked_at.is_(None))  # type: ignore[union-attr]
    ).first()
    if exists is not None:
        return False
    if session.exec(select(ApiKey).where(ApiKey.key_hash == hash_key(token))).first() is not None:
        return False
    create_key(session, name="bootstrap-admin", role=Role.admin, token=token)
    log.info("bootstrap admin key stored")
    return True
