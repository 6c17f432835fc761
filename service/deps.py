"""FastAPI dependencies: the database session, the authenticated principal and its role check.

Authentication itself lives in :mod:`service.auth`; here it meets FastAPI. A route declares the
roles it admits with one of the ``...Dep`` aliases (or :func:`require`), whose dependency object
carries its :class:`~service.auth.Access`: :func:`required_access` reads it back from any route
(the role-matrix test does), those that authenticate by hand included (:class:`BearerFor`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from sqlmodel import Session

from service.auth import (
    ADMIN,
    EDITOR,
    READER,
    SDK,
    Access,
    Principal,
    Role,
    authenticate,
    key_lookup,
)
from service.db import open_session


def get_session(request: Request) -> Iterator[Session]:
    """A session per request; mutating methods start a write transaction up front."""
    with open_session(write=request.method not in ("GET", "HEAD", "OPTIONS")) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

BEARER_DESCRIPTION = "An API key: `Authorization: Bearer <key>`"


class BearerFor(HTTPBearer):
    """The Bearer scheme (for OpenAPI) of a route that authenticates by hand, with the roles it
    admits: the SDK hot paths check the key themselves (:mod:`service.auth`), faster than
    FastAPI's dependency machinery would."""

    def __init__(self, access: Access) -> None:
        # The scheme keeps the name of the plain HTTPBearer so the OpenAPI file has one scheme.
        super().__init__(auto_error=False, scheme_name="HTTPBearer", description=BEARER_DESCRIPTION)
        self.access = access


_bearer = HTTPBearer(auto_error=False, description=BEARER_DESCRIPTION)


def get_principal(
    request: Request, session: SessionDep, _: Annotated[object, Depends(_bearer)]
) -> Principal:
    """The caller, its key looked up in the request's session (``service.auth``)."""
    return authenticate(request, key_lookup(session))


class RequireRole:
    """A dependency that admits only the roles of ``access`` (403 otherwise)."""

    def __init__(self, access: Access) -> None:
        self.access = access

    def __call__(self, principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        return self.access.check(principal)


def require(*roles: Role) -> RequireRole:
    """A dependency that admits only the given roles (admin is always admitted)."""
    return RequireRole(Access.of(*roles))


def required_access(route: APIRoute) -> Access | None:
    """The roles ``route`` admits, from the dependency that declares them (None: public)."""
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, RequireRole | BearerFor):
            return dep.call.access
        stack.extend(dep.dependencies)
    return None


_admin, _editor, _reader, _sdk = (RequireRole(a) for a in (ADMIN, EDITOR, READER, SDK))
AdminDep = Annotated[Principal, Depends(_admin)]
EditorDep = Annotated[Principal, Depends(_editor)]
ReaderDep = Annotated[Principal, Depends(_reader)]
SdkDep = Annotated[Principal, Depends(_sdk)]


# Paging and row ids, bounded by the columns they meet: the tables' ids are 32-bit integers on
# PostgreSQL (SERIAL), so a larger id is refused (422) before a query would fail on it.
MAX_ROW_ID = 2**31 - 1
Offset = Annotated[int, Query(ge=0, le=1_000_000_000, description="items to skip")]
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
