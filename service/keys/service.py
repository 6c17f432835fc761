"""API key rules: creation, hashing, revocation, bootstrap (the lookup: :mod:`service.auth`)."""

from __future__ import annotations

import logging
import secrets

from sqlalchemy import text
from sqlmodel import Session, col, select

from service.auth import hash_key
from service.db import utcnow
from service.errors import ConflictError, NotFoundError
from service.keys.models import ApiKey, ApiKeyCreated, ApiKeyPublic, Role

log = logging.getLogger("trialbook")

KEY_PREFIX = "tb_"


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


def list_keys(session: Session) -> list[ApiKeyPublic]:
    rows = session.exec(select(ApiKey).order_by(col(ApiKey.id))).all()
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


# Any constant: the PostgreSQL advisory lock that serialises first-admin creation between
# processes (several workers or servers starting at once over one database).
FIRST_ADMIN_LOCK = 0x7472_6961_6C62  # "trialb"


def _lock_first_admin(session: Session) -> None:
    """Serialise first-admin checks: SQLite's write session already holds the database's write
    lock (``BEGIN IMMEDIATE``); PostgreSQL takes a transaction-scoped advisory lock."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": FIRST_ADMIN_LOCK})


def _active_admin_exists(session: Session) -> bool:
    row = session.exec(
        select(ApiKey.id).where(ApiKey.role == Role.admin.value, col(ApiKey.revoked_at).is_(None))
    ).first()
    return row is not None


def ensure_first_admin(
    session: Session, token: str | None = None, *, name: str = "first-admin"
) -> ApiKeyCreated | None:
    """Create the first admin key when the database has no active admin key.

    Race-safe: the check and the insert run in one transaction under a lock (see
    :func:`_lock_first_admin`), so processes starting at once create one key between them.

    Parameters
    ----------
    session : Session
        A write session (``open_session(write=True)``), not yet used.
    token : str, optional
        The key to store (``TRIALBOOK_BOOTSTRAP_ADMIN_KEY``); default: a new random key.
    name : str, default "first-admin"
        The key's name.

    Returns
    -------
    ApiKeyCreated or None
        The key created (with its secret, to show once), or None when an admin key existed.
    """
    _lock_first_admin(session)
    if _active_admin_exists(session):
        session.rollback()
        return None
    if token is not None:
        known = session.exec(select(ApiKey.id).where(ApiKey.key_hash == hash_key(token))).first()
        if known is not None:  # the bootstrap key exists but was revoked or demoted: keep it so
            session.rollback()
            return None
    return create_key(session, name=name, role=Role.admin, token=token)


def bootstrap_admin(session: Session, token: str | None) -> bool:
    """Make ``token`` the first admin key when no active admin key exists (True if stored)."""
    if not token:
        return False
    created = ensure_first_admin(session, token, name="bootstrap-admin")
    if created is not None:
        log.info("bootstrap admin key stored")
    return created is not None
