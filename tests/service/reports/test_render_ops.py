"""The renderers on fixture data: registration rows, alerts, open-alert column, insights."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from service.insights.models import InsightsPublic
from service.reports.render import render_html, render_index, render_markdown
from service.reports.view import IndexRow, ReportView, open_alert_text

from .render_helpers import make_view

NOW = datetime(2025, 1, 9, tzinfo=UTC)


def alert(id_: int, type_: str, message: str, resolved: bool = False) -> dict[str, Any]:
    return {
        "id": id_,
        "experiment": "new-checkout",
        "phase": 1,
        "type": type_,
        "condition": "",
        "message": message,
        "details": {},
        "created_at": f"2025-01-0{id_}T10:00:00Z",
        "resolved_at": "2025-01-08T09:30:00Z" if resolved else None,
        "resolved_by": "ops (key 7)" if resolved else None,
    }


def make_ctx(exp: dict[str, Any], metrics: Any, results: Any, **extra: Any) -> ReportView:
    return make_view(exp, metrics, results, **extra)


def test_open_alert_text_counts_each_type():
    assert open_alert_text(()) == "none"
    assert open_alert_text(("srm",)) == "1 open: srm"
    types = ("guardrail_failed", "stalled", "srm", "guardrail_failed")
    assert open_alert_text(types) == "4 open: srm, guardrail_failed ×2, stalled"


def test_alerts_are_listed_open_first_and_escaped(
    fixture_experiment, fixture_metrics, fixture_results, xss
):
    alerts = [
        alert(1, "srm", f"older {xss}", resolved=True),
        alert(2, "guardrail_failed", "newer"),
        alert(3, "decision_ready", "newest", resolved=True),
    ]
    ctx = make_ctx(fixture_experiment, fixture_metrics, fixture_results, alerts=alerts)
    html = render_html(ctx)
    assert "<script" not in html and "older &lt;script&gt;" in html
    order = [html.index(f'data-alert-id="{i}"') for i in (2, 3, 1)]
    assert order == sorted(order)
    assert "resolved by ops (key 7), 2025-01-08 09:30 UTC" in html
    assert 'id="alert-summary">1 open, 2 resolved<' in html
    md = render_markdown(ctx)
    assert "<script>" not in md and "older \\<script\\>" in md
    assert "| guardrail\\_failed | 1 | 2025-01-02 10:00 UTC | open | newer |" in md


def test_template_and_approval_rows_are_escaped(
    fixture_experiment, fixture_metrics, fixture_results, xss
):
    exp = fixture_experiment | {"template": "std", "template_version": 3, "approved_by": xss}
    template = {
        "key": "std",
        "version": 3,
        "latest_version": 3,
        "is_default": False,
        "description": None,
        "defaults": {},
        "created_by": "admin",
        "created_at": "2025-01-01T00:00:00Z",
        "name": xss,
        "rules": {
            "required_guardrails": [{"metric": "errors", "max_margin": 0.02}],
            "minimum_duration_days": 14,
            "allowed_primary_metrics": ["purchase"],
            "require_structured_hypothesis": True,
            "max_secondary_metrics": 2,
            "approval_required": True,
        },
    }
    audit = [
        {
            "action": "approve",
            "at": "2025-01-02T08:00:00Z",
            "note": xss,
            "actor": xss,
            "from_status": None,
            "to_status": None,
            "details": None,
        }
    ]
    ctx = make_ctx(exp, fixture_metrics, fixture_results, template=template, audit=audit)
    html = render_html(ctx)
    assert "<script" not in html
    assert "<dt>Template</dt><dd>std v3 — &lt;script&gt;" in html
    assert (
        "guards errors with margin ≤ 2.00%; runs at least 14 days; primary metric one of "
        "purchase; structured hypothesis; at most 2 secondary metric(s); approval by another "
        "editor before start"
    ) in html
    assert "2025-01-02 08:00 UTC" in html
    md = render_markdown(ctx)
    assert "<script>" not in md and "- **Template:** std v3 — \\<script\\>" in md


def test_index_shows_alert_column_and_insights_escaped(xss):
    rows = [
        IndexRow("a-exp", xss, "pm", "running", "mismatch", 0, None, 0.5, ("srm", "stalled")),
        IndexRow("b-exp", "B", "pm", "draft", "", None, None, None),
    ]
    insights = {
        "computed_at": "2025-01-09T00:00:00Z",
        "experiments_by_status": {"draft": 1, "running": 1},
        "concluded_per_month": [{"month": "2024-12", "count": 2}],
        "outcomes": {
            "concluded": 2,
            "counts": {"ship": 1, "roll_back": 0, "inconclusive": 1},
            "shares": {"ship": 0.5, "roll_back": 0.0, "inconclusive": 0.5},
        },
        "win_rate": {"numerator": 1, "denominator": 2, "share": 0.5},
        "duration": {"experiments": 2, "median_planned_days": 14.0, "median_actual_days": 10.5},
        "srm": {"numerator": 0, "denominator": 2, "share": 0.0},
        "followed_recommendation": {"numerator": 2, "denominator": 2, "share": 1.0},
        "stopped_early": 1,
    }
    html = render_index(rows, NOW, InsightsPublic.model_validate(insights))
    assert "<script" not in html
    assert 'data-open-alerts="2">2 open: srm, stalled<' in html
    assert 'data-open-alerts="0">none<' in html
    assert 'data-field="insights.duration.median_actual_days" data-value="10.5">10.5<' in html
    assert 'data-field="insights.win_rate.share" data-value="0.5">50.00%<' in html
    assert "<td>2024-12</td>" in html
    note = render_index(rows, NOW, None, "Insights are unavailable right now.")
    assert "Insights are unavailable right now." in note
