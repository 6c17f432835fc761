"""Authentication: who is calling (:class:`Principal`), found from a credential, and what a role
may do (:class:`Access`, the role sets the routes declare).

Every route authenticates through :func:`authenticate`, the SDK fast paths included; they differ
only in how a Bearer key is looked up:

- :func:`key_lookup` — in the request's own session (the ORM, the request's transaction), for
  the ordinary routes (``service.deps``);
- :func:`fetch_key` — one plain SQL statement on a pooled DB-API connection, without a session,
  for ``POST /v1/events`` (its write transaction is taken later, around the inserts only);
- :class:`KeyCache` — :func:`fetch_key` remembered per token for ``TRIALBOOK_SDK_CACHE_SECONDS``
  (1 s) with extra columns read in the same statement (the SDK config version), for
  ``/v1/assign``, ``/v1/sdk/config`` and OFREP: most requests run no query at all.

Each compares the key's SHA-256 with :func:`hmac.compare_digest` and refuses revoked keys. Wrong
keys are throttled per client address (:mod:`service.throttle`). A request without a Bearer key
is offered to the app's other credential resolvers (:func:`resolve_other_credential`, e.g. a
browser session cookie) before it is answered 401.

Nothing here imports the web framework: domain services import :class:`Principal` from here.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import text
from sqlmodel import Session

from service.config import get_settings
from service.db import get_engine
from service.errors import PermissionDeniedError, UnauthorizedError
from service.throttle import client_of, throttle_of

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

MISSING_KEY: Final = (
    "Send an API key as `Authorization: Bearer <key>` (the server's first start printed "
    "an admin key; `trialbook keys create --role R --name N` makes others)."
)
UNKNOWN_KEY: Final = "The API key is unknown or revoked."


# What an API key may do (product.md §10). No docstring: it would enter the OpenAPI schema.
class Role(StrEnum):
    admin = "admin"
    editor = "editor"
    sdk = "sdk"
    viewer = "viewer"


def hash_key(key: str) -> str:
    """SHA-256 of the key (keys are 256-bit random tokens, so a fast hash is enough)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the API key's id, name and role."""

    key_id: int
    name: str
    role: Role

    @property
    def actor(self) -> str:
        return f"{self.name} (key {self.key_id})"


# ------------------------------------------------------------------------------------------ roles


@dataclass(frozen=True, slots=True)
class Access:
    """The roles a route admits (admin is always among them)."""

    roles: frozenset[Role]

    @classmethod
    def of(cls, *roles: Role) -> Access:
        return cls(frozenset((*roles, Role.admin)))

    def check(self, principal: Principal) -> Principal:
        """``principal`` when its role is admitted; otherwise 403 naming the roles that are."""
        if principal.role not in self.roles:
            names = ", ".join(sorted(r.value for r in self.roles))
            raise PermissionDeniedError(
                f"The role '{principal.role.value}' may not do this; it needs one of: {names}."
            )
        return principal


# The role sets of the API (product.md §10), declared by every route through service.deps and
# read back by the role-matrix test (tests/service/test_role_matrix.py).
ADMIN: Final = Access.of(Role.admin)
EDITOR: Final = Access.of(Role.editor)
READER: Final = Access.of(Role.editor, Role.viewer)
SDK: Final = Access.of(Role.sdk)


# ---------------------------------------------------------------------------------- credentials

Lookup = Callable[[str], Principal | None]
"""A Bearer token -> its active key's principal, or None (unknown or revoked)."""

CredentialResolver = Callable[["HTTPConnection"], Principal | None]
"""A request without a Bearer key -> the principal of another credential it carries, or None."""


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value (None for anything else)."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if token and scheme.lower() == "bearer" else None


def resolve_other_credential(conn: HTTPConnection) -> Principal | None:
    """The caller of a request that sent no Bearer key, from another credential, or None.

    This is where non-Bearer credentials plug in: the wiring module (:mod:`service.wiring`) sets
    the app's resolvers (``app.state.credential_resolvers``), asked in order; the first principal
    wins. A resolver that finds no credential of its kind returns None; one that finds a bad one
    raises :class:`~service.errors.UnauthorizedError` itself.
    """
    resolvers: Iterable[CredentialResolver] = getattr(conn.app.state, "credential_resolvers", ())
    for resolve in resolvers:
        principal = resolve(conn)
        if principal is not None:
            return principal
    return None


def authenticate(conn: HTTPConnection, lookup: Lookup) -> Principal:
    """The caller of a request (401 when no credential, or an unknown or revoked key; 429 after
    too many wrong keys from the client, see :mod:`service.throttle`).

    Parameters
    ----------
    conn : HTTPConnection
        The request (its ``Authorization`` header, client address and app).
    lookup : Lookup
        How a Bearer token is looked up (:func:`key_lookup`, :func:`fetch_key`, a
        :class:`KeyCache`).
    """
    token = bearer_token(conn.headers.get("authorization"))
    if token is None:
        principal = resolve_other_credential(conn)
        if principal is None:
            raise UnauthorizedError(MISSING_KEY)
        return principal
    throttle, client = throttle_of(conn.app), client_of(conn)
    throttle.check(client, token)
    principal = lookup(token)
    if principal is None:
        throttle.failed(client)
        raise UnauthorizedError(UNKNOWN_KEY)
    throttle.succeeded(client, token)
    return principal


# -------------------------------------------------------------------------------------- lookups


# The api_key table (service.keys.models.ApiKey) read by its unique, indexed hash.
_FIND_SQL: Final = text(
    "SELECT id, name, role, revoked_at, key_hash FROM api_key WHERE key_hash = :digest"
)


def find_key(session: Session, token: str) -> Principal | None:
    """The active key of ``token`` read through ``session`` (lookup by SHA-256, indexed; the
    final comparison in constant time), or None."""
    digest = hash_key(token)
    row = session.execute(_FIND_SQL, {"digest": digest}).first()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(str(row.key_hash), digest):
        return None
    return Principal(key_id=int(row.id), name=str(row.name), role=Role(row.role))


def key_lookup(session: Session) -> Lookup:
    """A :data:`Lookup` in ``session`` (see :func:`find_key`)."""
    return lambda token: find_key(session, token)


_KEY_SQL: Final = (
    "SELECT k.id, k.name, k.role, k.revoked_at, k.key_hash{also} "
    "FROM (SELECT 1 AS one) AS base LEFT JOIN api_key AS k ON k.key_hash = {mark}"
)


def fetch_key(token: str, also: str = "") -> tuple[Principal | None, tuple[Any, ...]]:
    """Look an API key up by its token in one plain SQL statement, with more columns if asked.

    The same rule as :func:`find_key`, without a session: a pooled DB-API connection runs one
    SELECT (its own snapshot) without SQLAlchemy's per-connection transaction events, which cost
    ~4x the query itself on SQLite.

    Parameters
    ----------
    token : str
        The presented Bearer token.
    also : str
        SQL expressions read in the same statement (comma-separated scalar subqueries), e.g.
        the SDK config version.

    Returns
    -------
    tuple
        The key's principal (None when unknown or revoked) and the values of ``also``.
    """
    digest = hash_key(token)
    engine = get_engine()
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    sql = _KEY_SQL.format(also=f", {also}" if also else "", mark=mark)
    conn = engine.raw_connection()
    try:
        cursor = conn.cursor()
        try:
            cursor.execute(sql, (digest,))
            row = cursor.fetchone()
        finally:
            cursor.close()
    finally:
        conn.close()  # back to the pool, which rolls back
    assert row is not None  # the LEFT JOIN on one base row always yields one row
    extra = tuple(row[5:])
    if row[0] is None or row[3] is not None or not hmac.compare_digest(str(row[4]), digest):
        return None, extra
    return Principal(key_id=int(row[0]), name=str(row[1]), role=Role(row[2])), extra


class KeyCache:
    """:func:`fetch_key` remembered for ``TRIALBOOK_SDK_CACHE_SECONDS`` per token (one per app).

    The SDK hot path then runs no query at all for most requests. The price: within one process a
    revoked key (or a change to what ``also`` reads) takes effect up to that many seconds late
    (1 s by default; 0 turns the cache off).

    Parameters
    ----------
    also : str
        Columns read with every lookup (see :func:`fetch_key`); :meth:`get` returns them.
    """

    MAX_ENTRIES = 4096

    def __init__(self, also: str = "") -> None:
        self.also = also
        self._entries: dict[str, tuple[float, Principal | None, tuple[Any, ...]]] = {}

    def get(self, token: str) -> tuple[Principal | None, tuple[Any, ...]]:
        """The principal of ``token`` (None: unknown or revoked) and the ``also`` values."""
        now = time.monotonic()
        hit = self._entries.get(token)
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        principal, extra = fetch_key(token, self.also)
        ttl = get_settings().sdk_cache_seconds
        if ttl > 0:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[token] = (now + ttl, principal, extra)
        return principal, extra

    def clear(self) -> None:
        self._entries.clear()
