"""HTTP routes: the report (HTML or Markdown), the index page, browser sign-in, share links.

API clients send ``Authorization: Bearer <key>`` as everywhere. A browser signs in once at
``/login`` (the key becomes a session cookie, :mod:`service.sessions.service`); a browser without
credentials is sent there (303) instead of getting a 401 JSON, while an API client (no
``text/html`` in ``Accept``) keeps its problem+json 401. A share link (``/share/<token>``)
opens one experiment's report, read-only, for someone without a key (``service.reports.shares``).
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials

from service.auth import READER, Principal
from service.db import open_session, utcnow
from service.deps import EditorDep, RequireRole, RowId, SessionDep, _bearer, get_principal
from service.errors import (
    NotFoundError,
    PermissionDeniedError,
    UnauthorizedError,
    ValidationFailedError,
    responses,
)
from service.keys.models import ApiKey, Role
from service.reports import service, shares
from service.reports.models import ShareCreate, ShareCreated, ShareList, SharePublic
from service.reports.render import (
    IndexFilters,
    Nav,
    render_html,
    render_index,
    render_login,
    render_markdown,
)
from service.reports.view import build_report
from service.sessions import service as sessions
from service.throttle import client_of, throttle_of

router = APIRouter(tags=["reports"], responses=responses(401, 403))

MARKDOWN = "text/markdown; charset=utf-8"
READERS = frozenset({Role.viewer, Role.editor, Role.admin})
EDITORS = frozenset({Role.editor, Role.admin})
_HTML_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}, "text/markdown": {}}, "description": "The report"}
}
_INDEX_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}}, "description": "The index page"},
    303: {"description": "A browser without credentials is sent to `/login`"},
}
MAX_FORM_BYTES = 8192


def wants_html(request: Request) -> bool:
    """A browser navigating (``text/html`` accepted), not an API client."""
    return "text/html" in request.headers.get("accept", "")


class PageReader(RequireRole):
    """A reader (viewer, editor, admin) by key or session; None for a browser without either
    (the page then redirects to ``/login``). Its roles are data (``auth.READER``), read by the
    role-matrix test through :func:`service.deps.required_access`."""

    def __call__(  # type: ignore[override]  # a page takes the request, not a resolved principal
        self,
        request: Request,
        session: SessionDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal | None:
        if (
            credentials is None
            and wants_html(request)
            and sessions.key_of_request(session, request) is None
        ):
            return None
        return self.access.check(get_principal(request, session, credentials))


page_reader = PageReader(READER)
PageReaderDep = Annotated[Principal | None, Depends(page_reader)]


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def _nav(request: Request, principal: Principal) -> Nav:
    token = request.cookies.get(sessions.COOKIE, "")
    csrf = sessions.csrf_token(token) if token and "authorization" not in request.headers else None
    return Nav(actor=principal.name, csrf=csrf)


@router.get(
    "/v1/experiments/{key}/report",
    response_class=HTMLResponse,
    responses={**_HTML_DOC, **responses(404, 422)},
)
def get_report(
    key: str,
    request: Request,
    session: SessionDep,
    principal: PageReaderDep,
    format: Literal["html", "md"] = "html",
) -> Response:
    """The standardized report of an experiment: HTML, or Markdown with `?format=md`."""
    if principal is None:
        return _to_login(request)
    view = build_report(service.build_inputs(session, key))
    if format == "md":
        return Response(render_markdown(view), media_type=MARKDOWN)
    links = shares.list_shares(session, key).items if principal.role in EDITORS else None
    new = request.query_params.get("new_share")
    return HTMLResponse(render_html(view, _nav(request, principal), links, new))


def _filters(
    q: Annotated[
        str, Query(max_length=200, description="words in title, hypothesis, decision")
    ] = "",
    status: Annotated[str, Query(max_length=20)] = "",
    owner: Annotated[str, Query(max_length=200)] = "",
    tag: Annotated[str, Query(max_length=100)] = "",
    recommendation: Annotated[str, Query(max_length=20)] = "",
    sort: Annotated[
        service.SortKey,
        Query(),
    ] = "created",
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
) -> IndexFilters:
    return IndexFilters(q, status, owner, tag, recommendation, sort, order)


FiltersDep = Annotated[IndexFilters, Depends(_filters)]


def _index(
    request: Request, session: SessionDep, principal: Principal | None, f: IndexFilters
) -> Response:
    if principal is None:
        return _to_login(request)
    page = service.index_rows(session, f)
    insights, note = service.index_insights(session)
    return HTMLResponse(
        render_index(
            page.rows,
            utcnow(),
            insights,
            note,
            total=page.total,
            filters=f,
            options=page.options,
            nav=_nav(request, principal),
            path=request.url.path,
        )
    )


@router.get("/reports", response_class=HTMLResponse, responses={**_INDEX_DOC, **responses(422)})
def get_index(
    request: Request, session: SessionDep, principal: PageReaderDep, f: FiltersDep
) -> Response:
    """Every experiment with status, health, alerts and recommendation; filters, search, sort."""
    return _index(request, session, principal, f)


@router.get("/", response_class=HTMLResponse, responses={**_INDEX_DOC, **responses(422)})
def get_root(
    request: Request, session: SessionDep, principal: PageReaderDep, f: FiltersDep
) -> Response:
    """The index page (same as `/reports`)."""
    return _index(request, session, principal, f)


# ------------------------------------------------------------------------------ browser sign-in


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict (first value of each field)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ValidationFailedError("The form is too large.")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValidationFailedError("The form is not valid URL-encoded UTF-8.") from exc
    return {k: v[0] for k, v in parsed.items()}


def _safe_next(value: str) -> str:
    """Only a path on this server (no ``//host`` or scheme): an open redirect otherwise."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


def _login_page(request: Request, next_path: str, error: str | None, status: int) -> HTMLResponse:
    csrf = secrets.token_urlsafe(24)
    page = HTMLResponse(
        render_login(csrf, next_path, error, sessions.SESSION_HOURS), status_code=status
    )
    page.set_cookie(
        sessions.LOGIN_CSRF_COOKIE,
        csrf,
        max_age=3600,
        path="/login",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    page.headers["Cache-Control"] = "no-store"
    return page


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def get_login(request: Request, next: Annotated[str, Query(max_length=2000)] = "/") -> Response:
    """The sign-in form."""
    return _login_page(request, _safe_next(next), None, 200)


@router.post("/login", include_in_schema=False)
async def post_login(request: Request, session: SessionDep) -> Response:
    """Exchange a pasted API key for a session cookie."""
    form = await _form(request)
    next_path = _safe_next(form.get("next", "/"))
    presented = form.get("csrf", "")
    expected = request.cookies.get(sessions.LOGIN_CSRF_COOKIE, "")
    if not presented or not expected or not secrets.compare_digest(presented, expected):
        return _login_page(
            request, next_path, "The form expired or came from another page: try again.", 403
        )
    key = form.get("api_key", "").strip()
    throttle, client = throttle_of(request.app), client_of(request)
    throttle.check(client, key)
    started = sessions.start_session(session, key) if key else None
    if started is None:
        throttle.failed(client)
        return _login_page(request, next_path, "The API key is unknown or revoked.", 401)
    token, row = started
    if (key_row := session.get(ApiKey, row.key_id)) is not None and key_row.role == Role.sdk:
        session.rollback()
        return _login_page(
            request, next_path, "An sdk key cannot read reports: use a viewer key.", 403
        )
    throttle.succeeded(client, key)
    session.commit()
    done = RedirectResponse(next_path, status_code=303)
    done.set_cookie(
        sessions.COOKIE,
        token,
        max_age=sessions.SESSION_HOURS * 3600,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    done.delete_cookie(sessions.LOGIN_CSRF_COOKIE, path="/login")
    return done


@router.post("/logout", include_in_schema=False)
async def post_logout(request: Request, session: SessionDep) -> Response:
    """End the browser's session."""
    form = await _form(request)
    token = request.cookies.get(sessions.COOKIE, "")
    if token and not sessions.check_csrf(token, form.get("csrf", "")):
        raise PermissionDeniedError(
            "The form's CSRF token does not match this session.", code="csrf"
        )
    if token:
        sessions.end_session(session, token)
        session.commit()
    done = RedirectResponse("/login", status_code=303)
    done.delete_cookie(sessions.COOKIE, path="/")
    return done


# ---------------------------------------------------------------------------------- share links


@router.post(
    "/v1/experiments/{key}/share",
    status_code=201,
    response_model=ShareCreated,
    responses=responses(404, 422),
)
def create_share(
    key: str, body: ShareCreate, session: SessionDep, principal: EditorDep
) -> ShareCreated:
    """Create an expiring, revocable, read-only link to the experiment's report (shown once)."""
    created = shares.create_share(session, key, body, principal.actor)
    session.commit()
    return created


@router.get("/v1/experiments/{key}/share", response_model=ShareList, responses=responses(404))
def list_shares(key: str, session: SessionDep, _: EditorDep) -> ShareList:
    """The experiment's share links, newest first (expired and revoked ones too)."""
    return shares.list_shares(session, key)


@router.delete(
    "/v1/experiments/{key}/share/{share_id}",
    response_model=SharePublic,
    responses=responses(404, 422),
)
def revoke_share(
    key: str, share_id: RowId, session: SessionDep, principal: EditorDep
) -> SharePublic:
    """Revoke a share link: it stops working at once."""
    out = shares.revoke_share(session, key, share_id, principal.actor)
    session.commit()
    return out


async def _session_editor(
    request: Request, session: SessionDep
) -> tuple[Principal, dict[str, str]]:
    """The editor behind a browser form: its session cookie and the form's CSRF token."""
    form = await _form(request)
    token = request.cookies.get(sessions.COOKIE, "")
    row = sessions.key_of_token(session, token)
    if row is None or row.id is None:
        raise UnauthorizedError("Sign in at /login first.")
    if not sessions.check_csrf(token, form.get("csrf", "")):
        raise PermissionDeniedError(
            "The form's CSRF token does not match this session.", code="csrf"
        )
    principal = Principal(key_id=row.id, name=row.name, role=Role(row.role))
    if principal.role not in EDITORS:
        raise PermissionDeniedError(f"The role '{principal.role.value}' may not share reports.")
    return principal, form


@router.post("/v1/experiments/{key}/share/new", include_in_schema=False)
async def create_share_form(key: str, request: Request, session: SessionDep) -> Response:
    """The report page's form: create a link, then show it once on the report."""
    principal, form = await _session_editor(request, session)
    try:
        body = ShareCreate.model_validate(
            {
                "expires_in_hours": int(form.get("expires_in_hours") or 168),
                "note": form.get("note") or None,
            }
        )
    except ValueError as exc:
        raise ValidationFailedError(
            "expires_in_hours: a whole number of hours from 1 to 2160; note: at most 500 "
            "characters."
        ) from exc
    created = shares.create_share(session, key, body, principal.actor)
    session.commit()
    url = str(request.base_url).rstrip("/") + created.url
    return RedirectResponse(
        f"/v1/experiments/{quote(key)}/report?new_share={quote(url, safe='')}#shares",
        status_code=303,
    )


@router.post("/v1/experiments/{key}/share/{share_id}/revoke", include_in_schema=False)
async def revoke_share_form(
    key: str, share_id: RowId, request: Request, session: SessionDep
) -> Response:
    """The report page's form: revoke a link."""
    principal, _ = await _session_editor(request, session)
    shares.revoke_share(session, key, share_id, principal.actor)
    session.commit()
    return RedirectResponse(f"/v1/experiments/{quote(key)}/report#shares", status_code=303)


@router.get("/share/{token}", response_class=HTMLResponse, include_in_schema=False)
def open_share(
    token: str,
    request: Request,
    session: SessionDep,
    format: Literal["html", "md"] = "html",
) -> Response:
    """A shared report, read-only, without a key (404 once expired or revoked)."""
    if len(token) > 100:
        raise NotFoundError("This share link is unknown, expired or revoked.")
    with open_session(write=True) as writer:
        key = shares.open_share(writer, token, client_of(request))
        writer.commit()
    if key is None:
        raise NotFoundError(
            "This share link is unknown, expired or revoked: ask the experiment's owner for a "
            "new one."
        )
    view = build_report(service.build_inputs(session, key, shared=True))
    if format == "md":
        return Response(render_markdown(view), media_type=MARKDOWN)
    page = HTMLResponse(render_html(view))
    page.headers["Cache-Control"] = "no-store"
    page.headers["Referrer-Policy"] = "no-referrer"
    return page
