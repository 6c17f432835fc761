"""Browser sessions and their CSRF tokens.

``/login`` takes an API key once and answers with a cookie holding a fresh 256-bit token (only
its SHA-256 is stored, :class:`~service.sessions.models.BrowserSession`). The cookie is
``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page sends it) and
expires with the session (:data:`SESSION_HOURS`). A session authenticates only safe requests
(GET, HEAD) through :func:`key_of_request`: anything that changes state takes a Bearer key, or is
one of the browser forms, which check a CSRF token (:func:`csrf_token`: an HMAC of the session
token, so it is known only to a page rendered for that session).

The login form itself has no session yet: it is protected by a double-submit token, a random
value in a ``SameSite=Strict`` cookie that the form must repeat (:data:`LOGIN_CSRF_COOKIE`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from fastapi import Request
from sqlmodel import Session, select
from starlette.requests import HTTPConnection

from service.auth import Principal, Role, find_key, hash_key
from service.db import open_session, utcnow
from service.keys.models import ApiKey
from service.sessions.models import BrowserSession

__all__ = [
    "COOKIE",
    "LOGIN_CSRF_COOKIE",
    "SESSION_HOURS",
    "check_csrf",
    "csrf_token",
    "end_session",
    "key_of_request",
    "key_of_token",
    "principal_of_cookie",
    "start_session",
]

COOKIE = "tb_session"
LOGIN_CSRF_COOKIE = "tb_login_csrf"
# A reviewer's working day and a half: long enough not to log in twice a day, short enough that a
# forgotten browser does not stay signed in for a week.
SESSION_HOURS = 12
SAFE_METHODS = frozenset({"GET", "HEAD"})


def start_session(
    session: Session, api_key: str, *, now: datetime | None = None
) -> tuple[str, BrowserSession] | None:
    """A new session for an API key (None when the key is unknown or revoked).

    Returns the cookie token (shown to the browser once) and the stored row; the caller commits.
    """
    found = find_key(session, api_key)
    if found is None:
        return None
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    stored = BrowserSession(
        token_hash=hash_key(token),
        key_id=found.key_id,
        created_at=now,
        expires_at=now + timedelta(hours=SESSION_HOURS),
    )
    session.add(stored)
    return token, stored


def key_of_token(session: Session, token: str, *, now: datetime | None = None) -> ApiKey | None:
    """The API key a session token stands for, if the session and the key are both alive."""
    if not token:
        return None
    digest = hash_key(token)
    row = session.exec(select(BrowserSession).where(BrowserSession.token_hash == digest)).first()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    if row.revoked_at is not None or row.expires_at <= (now or utcnow()):
        return None
    key = session.get(ApiKey, row.key_id)
    if key is None or key.revoked_at is not None:
        return None
    return key


def key_of_request(session: Session, request: Request) -> ApiKey | None:
    """The API key behind a request's session cookie: safe methods only (see module doc)."""
    if request.method not in SAFE_METHODS:
        return None
    return key_of_token(session, request.cookies.get(COOKIE, ""))


def principal_of_cookie(conn: HTTPConnection) -> Principal | None:
    """The caller of a request without a Bearer key that carries a live session cookie (safe
    methods only): a credential resolver of :func:`service.auth.resolve_other_credential`."""
    token = conn.cookies.get(COOKIE, "")
    if not token or getattr(conn, "method", None) not in SAFE_METHODS:
        return None
    with open_session() as session:
        row = key_of_token(session, token)
    if row is None or row.id is None:
        return None
    return Principal(key_id=row.id, name=row.name, role=Role(row.role))


def end_session(session: Session, token: str) -> bool:
    """Revoke the session of a cookie token (``/logout``); False when there was none."""
    row = session.exec(
        select(BrowserSession).where(BrowserSession.token_hash == hash_key(token))
    ).first()
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    session.add(row)
    return True


def csrf_token(session_token: str) -> str:
    """The CSRF token of the forms of a session: HMAC-SHA256 of the session token."""
    return hmac.new(session_token.encode(), b"trialbook-csrf", hashlib.sha256).hexdigest()


def check_csrf(session_token: str, presented: str) -> bool:
    """The form's token matches the session's (constant-time)."""
    if not session_token or not presented:
        return False
    return hmac.compare_digest(csrf_token(session_token), presented)
