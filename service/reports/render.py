"""Render the report, the index and the login page with Jinja2 templates over the view model.

HTML templates are autoescaped (every user string is escaped unless a template says otherwise,
and none does); the Markdown template runs in an environment whose ``finalize`` escapes every
value for Markdown (table pipes, emphasis, links, raw HTML), except the numbers the view model
formatted (the ``raw`` filter). The templates are package data (``service/reports/templates``);
the one stylesheet is ``report.css``, inline in every page (the Content-Security-Policy admits it
by its hash, :data:`CSS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from service.insights.models import InsightsPublic
from service.reports import format as fmt
from service.reports.models import SharePublic
from service.reports.view import INVALID_NOTE, RECOMMENDATION_TEXT, IndexRow, ReportView

CSS = files("service.reports").joinpath("templates/report.css").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Nav:
    """The page's top bar for a signed-in reader: who, and the logout form's CSRF token."""

    actor: str
    csrf: str | None = None


_GLOBALS: dict[str, Any] = {
    "css": CSS,
    "invalid_note": INVALID_NOTE,
    "when": fmt.when,
    "num": fmt.num,
    "share": fmt.share,
    "days": fmt.days,
    "labels": RECOMMENDATION_TEXT,
}

html_env = Environment(
    loader=PackageLoader("service.reports", "templates"),
    autoescape=select_autoescape(["html", "html.j2"], default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=False,
    lstrip_blocks=False,
)
html_env.globals.update(_GLOBALS)


def md_escape(value: Any) -> str:
    """Escape a value for a Markdown line or table cell (one line, no markup of its own)."""
    if isinstance(value, Markup):
        return str(value)
    text = "" if value is None else str(value)
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    for ch in "`*_[]<>#":
        text = text.replace(ch, "\\" + ch)
    return text


md_env = Environment(
    loader=PackageLoader("service.reports", "templates"),
    autoescape=False,
    undefined=StrictUndefined,
    finalize=md_escape,
    keep_trailing_newline=True,
)
md_env.filters["raw"] = Markup  # numbers formatted by the view model: nothing to escape


def render_html(
    view: ReportView,
    nav: Nav | None = None,
    shares: list[SharePublic] | None = None,
    new_share: str | None = None,
) -> str:
    """The report as one self-contained HTML document (inline CSS and SVG, no script).

    ``shares`` (editors only) adds the share-link list and forms; ``new_share`` the URL of a
    link just made (shown once).
    """
    return html_env.get_template("report.html.j2").render(
        v=view, nav=nav, shares=shares, new_share=new_share
    )


def render_markdown(view: ReportView) -> str:
    """The same report as GitHub-flavoured Markdown: the same sections, labels and numbers."""
    return md_env.get_template("report.md.j2").render(v=view)


RATES = (
    (
        "Win rate",
        "win_rate",
        "concluded experiments where a treatment beat control significantly on the primary metric",
    ),
    ("Share with SRM", "srm", "started experiments with a sample ratio mismatch"),
    (
        "Followed the recommendation",
        "followed_recommendation",
        "concluded experiments whose decision followed the recommendation at stop",
    ),
)


@dataclass(frozen=True)
class IndexFilters:
    """The index page's query: search text, filters and sort order."""

    q: str = ""
    status: str = ""
    owner: str = ""
    tag: str = ""
    recommendation: str = ""
    sort: str = "created"
    order: str = "desc"

    def __getitem__(self, name: str) -> str:  # the template reads f[name]
        return str(getattr(self, name))

    @property
    def active(self) -> bool:
        return bool(self.q or self.status or self.owner or self.tag or self.recommendation)


INDEX_COLUMNS = (
    ("key", "Experiment"),
    ("title", "Title"),
    ("owner", "Owner"),
    ("status", "Status"),
    ("", "Tags"),
    ("srm", "SRM"),
    ("alerts", "Open alerts"),
    ("", "Multiple exposures"),
    ("progress", "Progress"),
    ("recommendation", "Recommendation"),
)


def _sort_link(path: str, f: IndexFilters, col: str) -> str:
    from urllib.parse import urlencode

    order = "asc" if f.sort != col or f.order == "desc" else "desc"
    query = {
        k: v
        for k, v in (
            ("q", f.q),
            ("status", f.status),
            ("owner", f.owner),
            ("tag", f.tag),
            ("recommendation", f.recommendation),
        )
        if v
    }
    return f"{path}?{urlencode({**query, 'sort': col, 'order': order})}"


def render_insights(insights: InsightsPublic | None, note: str | None = None) -> Markup:
    return Markup(
        html_env.get_template("insights.html.j2").render(i=insights, note=note, rates=RATES)
    )


def render_index(
    rows: list[IndexRow],
    generated_at: datetime,
    insights: InsightsPublic | None = None,
    insights_note: str | None = None,
    *,
    total: int | None = None,
    filters: IndexFilters | None = None,
    options: dict[str, list[str]] | None = None,
    nav: Nav | None = None,
    path: str = "/",
) -> str:
    """The index page: filters, every matching experiment, then the portfolio insights."""
    f = filters or IndexFilters()
    options = options or {}
    selects = [
        ("status", "Status", [(s, s) for s in options.get("status", [])]),
        ("owner", "Owner", [(s, s) for s in options.get("owner", [])]),
        ("tag", "Tag", [(s, s) for s in options.get("tag", [])]),
        (
            "recommendation",
            "Recommendation",
            [(k, RECOMMENDATION_TEXT[k]) for k in RECOMMENDATION_TEXT],
        ),
    ]
    return html_env.get_template("index.html.j2").render(
        rows=rows,
        total=len(rows) if total is None else total,
        generated_at=fmt.when(generated_at),
        f=f,
        filtered=f.active,
        selects=selects,
        columns=INDEX_COLUMNS,
        sort_links={c: _sort_link(path, f, c) for c, _ in INDEX_COLUMNS if c},
        insights_html=render_insights(insights, insights_note),
        nav=nav,
        path=path,
    )


def render_login(csrf: str, next_path: str, error: str | None, hours: int) -> str:
    """The sign-in form."""
    return html_env.get_template("login.html.j2").render(
        csrf=csrf, next=next_path, error=error, hours=hours, nav=None
    )
