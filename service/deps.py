"""FastAPI dependencies: database session and the authenticated principal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from service.db import open_session
from service.errors import PermissionDeniedError, UnauthorizedError
from service.keys.models import Role
from service.keys.service import authenticate
from service.sessions.service import key_of_request
from service.throttle import client_of, throttle_of


def get_session(request: Request) -> Iterator[Session]:
    """A session per request; mutating methods start a write transaction up front."""
    session = open_session(write=request.method not in ("GET", "HEAD", "OPTIONS"))
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the API key's id, name and role."""

    key_id: int
    name: str
    role: Role

    @property
    def actor(self) -> str:
        return f"{self.name} (key {self.key_id})"


def get_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None and (row := key_of_request(session, request)) is not None:
        assert row.id is not None  # a browser session (service.sessions): GET and HEAD only
        return Principal(key_id=row.id, name=row.name, role=Role(row.role))
    return principal_for(session, credentials, request)


def principal_for(
    session: Session, credentials: HTTPAuthorizationCredentials | None, request: Request
) -> Principal:
    """The caller of a request's Bearer credentials (401 when missing, unknown or revoked; 429
    after too many wrong keys from the client, see :mod:`service.throttle`)."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise UnauthorizedError(
            "Send an API key as `Authorization: Bearer <key>` (the server's first start printed "
            "an admin key; `trialbook keys create --role R --name N` makes others)."
        )
    throttle, client = throttle_of(request.app), client_of(request)
    throttle.check(client, credentials.credentials)
    row = authenticate(session, credentials.credentials)
    if row is None or row.id is None:
        throttle.failed(client)
        raise UnauthorizedError("The API key is unknown or revoked.")
    throttle.succeeded(client, credentials.credentials)
    return Principal(key_id=row.id, name=row.name, role=Role(row.role))


def require(*roles: Role) -> Callable[..., Principal]:
    """A dependency that admits only the given roles (admin is always admitted)."""
    allowed = frozenset((*roles, Role.admin))

    def _check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if principal.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise PermissionDeniedError(
                f"The role '{principal.role.value}' may not do this; it needs one of: {names}."
            )
        return principal

    _check.allowed_roles = allowed  # type: ignore[attr-defined]  # read by the role-matrix test
    return _check


AdminDep = Annotated[Principal, Depends(require(Role.admin))]
EditorDep = Annotated[Principal, Depends(require(Role.editor))]
ReaderDep = Annotated[Principal, Depends(require(Role.editor, Role.viewer))]
SdkDep = Annotated[Principal, Depends(require(Role.sdk))]


# Paging and row ids, bounded by the columns they meet: the tables' ids are 32-bit integers on
# PostgreSQL (SERIAL), so a larger id is refused (422) before a query would fail on it.
MAX_ROW_ID = 2**31 - 1
Offset = Annotated[int, Query(ge=0, le=1_000_000_000, description="items to skip")]
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
