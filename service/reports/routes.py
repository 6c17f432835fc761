"""HTTP routes for the report (HTML or Markdown) and the index page.

Both need a key of role viewer, editor or admin, sent as ``Authorization: Bearer <key>`` like every
other endpoint; a browser opens them through a header extension, or with
``trialbook report KEY --out report.html``.
"""

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from service.db import utcnow
from service.deps import ReaderDep, SessionDep
from service.errors import responses
from service.reports import service
from service.reports.render import render_html, render_index, render_markdown

router = APIRouter(tags=["reports"], responses=responses(401, 403))

MARKDOWN = "text/markdown; charset=utf-8"
_HTML_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}, "text/markdown": {}}, "description": "The report"}
}
_INDEX_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}}, "description": "The index page"}
}


@router.get(
    "/v1/experiments/{key}/report",
    response_class=HTMLResponse,
    responses={**_HTML_DOC, **responses(404, 422)},
)
def get_report(
    key: str, session: SessionDep, _: ReaderDep, format: Literal["html", "md"] = "html"
) -> Response:
    """The standardized report of an experiment: HTML, or Markdown with `?format=md`."""
    ctx = service.build_context(session, key)
    if format == "md":
        return Response(render_markdown(ctx), media_type=MARKDOWN)
    return HTMLResponse(render_html(ctx))


def _index(session: SessionDep) -> HTMLResponse:
    insights, note = service.index_insights(session)
    return HTMLResponse(render_index(service.index_rows(session), utcnow(), insights, note))


@router.get("/reports", response_class=HTMLResponse, responses=_INDEX_DOC)
def get_index(session: SessionDep, _: ReaderDep) -> HTMLResponse:
    """Every experiment with its status, health, alerts and recommendation; portfolio insights."""
    return _index(session)


@router.get("/", response_class=HTMLResponse, responses=_INDEX_DOC)
def get_root(session: SessionDep, _: ReaderDep) -> HTMLResponse:
    """The index page (same as `/reports`)."""
    return _index(session)
