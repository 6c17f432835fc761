"""The renderers on fixture results: sections, numbers, escaping, charts, self-containment."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from service.analysis.models import ResultsPublic
from service.reports.charts import ForestInput, forest_plot
from service.reports.render import render_html, render_index, render_markdown
from service.reports.view import SECTIONS, IndexRow, ReportView

from .render_helpers import make_view

NOW = datetime(2025, 1, 9, tzinfo=UTC)
# Anything a browser would fetch: scripts, stylesheets, images, frames, CSS urls.
EXTERNAL = re.compile(
    r"<script|<link|<img|<iframe|<object|<embed|\bsrc\s*=|url\(|@import"
    r"|href\s*=\s*[\"']?(https?:)?//",
    re.I,
)


def make_ctx(
    experiment: dict[str, Any],
    metrics: dict[str, dict[str, Any]],
    results: dict[str, Any] | None,
    audit: list[dict[str, Any]] | None = None,
    note: str | None = None,
) -> ReportView:
    return make_view(experiment, metrics, results, audit=audit, note=note)


@pytest.fixture
def ctx(fixture_experiment, fixture_metrics, fixture_results) -> ReportView:
    return make_ctx(fixture_experiment, fixture_metrics, fixture_results)


def test_fixture_follows_the_results_contract(fixture_results):
    # the fixture is the analysis domain's response model, so the renderer reads the real shape
    ResultsPublic.model_validate(fixture_results)


def test_html_has_every_section_in_the_standard_order(ctx):
    html = render_html(ctx)
    assert html.startswith("<!doctype html>")
    positions = [html.index('id="header"')] + [
        html.index(f'<section id="{sid}">') for sid, _ in SECTIONS
    ]
    assert positions == sorted(positions)
    for _, title in SECTIONS:
        assert title in html


def test_markdown_has_every_section_in_the_standard_order(ctx):
    md = render_markdown(ctx)
    positions = [md.index(f"## {title}") for _, title in SECTIONS]
    assert positions == sorted(positions)
    assert md.startswith("# New checkout flow")


def test_html_numbers_equal_the_results_json(ctx, fixture_results, fixture_experiment, tools):
    html = render_html(ctx)
    cells = tools.cells(html)
    seen = set()
    for field, value, text in cells:
        source = (
            fixture_experiment
            if field.startswith(("variants.", "sample_size", "planned_"))
            else fixture_results
        )
        expected = tools.resolve(source, field)
        assert value == expected, field
        if value is not None:
            tools.assert_shown(text, float(value))
        seen.add(field)
    # every headline number of every comparison is on the page
    for m, metric in enumerate(fixture_results["metrics"]):
        for i, _ in enumerate(metric["comparisons"]):
            for leaf in (
                "absolute.estimate",
                "relative.estimate",
                "absolute.p_value",
                "p_value_adjusted",
            ):
                assert f"metrics.{m}.comparisons.{i}.{leaf}" in seen
        for j, _ in enumerate(metric["variants"]):
            assert f"metrics.{m}.variants.{j}.units" in seen
            assert f"metrics.{m}.variants.{j}.mean" in seen
    for field in ("srm.p_value", "multiple_exposures", "power.progress", "power.units_so_far"):
        assert field in seen
    assert "metrics.0.comparisons.0.cuped.absolute.estimate" in seen
    assert "metrics.0.comparisons.0.bayesian.posterior_mean" in seen


def test_markdown_numbers_equal_the_results_json(ctx, fixture_results, tools):
    md = render_markdown(ctx)
    for metric in fixture_results["metrics"]:
        heading = f"({metric['metric']})"
        for c in metric["comparisons"]:
            row = tools.md_row(md, heading, f"{c['variant']} vs {c['control']}")
            _, absolute, abs_ci, relative, rel_ci, p, p_adj, significant, _ = row
            tools.assert_shown(absolute, c["absolute"]["estimate"])
            for shown, value in zip(
                tools.interval(abs_ci),
                (c["absolute"]["ci_low"], c["absolute"]["ci_high"]),
                strict=True,
            ):
                assert abs(shown - value) <= 5.001e-4 * abs(value)
            tools.assert_shown(relative, c["relative"]["estimate"])
            for shown, value in zip(
                tools.interval(rel_ci),
                (c["relative"]["ci_low"], c["relative"]["ci_high"]),
                strict=True,
            ):
                assert abs(shown - value) <= 5.001e-5
            tools.assert_shown(p, c["absolute"]["p_value"])
            tools.assert_shown(p_adj, c["p_value_adjusted"])
            assert significant == ("yes" if c["significant"] else "no")
        for v in metric["variants"]:
            row = tools.md_row(md, heading, v["variant"])
            assert int(row[1].replace(",", "")) == v["units"]
            tools.assert_shown(row[2], v["mean"])
    assert f"p-value {fixture_results['srm']['p_value']}" in md
    assert "**Recommendation:** Roll back" in md
    assert fixture_results["decision"]["reasons"][0].replace("_", "\\_") in md


def test_guardrail_verdict_and_margin_are_shown(ctx):
    html = render_html(ctx)
    # product.md §14: every guardrail's verdict is in the verdict block at the top
    verdict = html[html.index('<section id="verdict"') : html.index('<section id="over-time">')]
    guard = verdict[verdict.index('<table id="guardrails">') :]
    assert "FAIL ✗" in guard and "Checkout errors" in guard and "5.00%" in guard
    md = render_markdown(ctx)
    assert "| errors | treatment | 5.00% | +29.62% | [+15.58%, +43.66%] | FAIL ✗ |" in md


def test_every_user_string_is_escaped(fixture_experiment, fixture_metrics, fixture_results, xss):
    exp = fixture_experiment
    exp["title"] = exp["owner"] = exp["description"] = xss
    exp["hypothesis"] = xss
    exp["variants"][1]["name"] = xss
    exp["tags"] = [xss]
    exp["status"] = "concluded"
    exp["decision"] = {
        "decision": "ship",
        "variant": "treatment",
        "rationale": xss,
        "decided_by": xss,
        "decided_at": "2025-01-10T00:00:00Z",
    }
    fixture_metrics["purchase"]["name"] = xss
    fixture_results["decision"]["reasons"] = [xss]
    fixture_results["metrics"][1]["comparisons"][0]["warnings"] = [xss]
    ctx = make_ctx(exp, fixture_metrics, fixture_results)
    html = render_html(ctx)
    assert "<script" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;"  # markupsafe in html
    md = render_markdown(ctx)
    assert "<script>" not in md
    assert "\\<script\\>" in md


def test_charts_are_inline_svg_with_a_size(ctx, fixture_results):
    # product.md §14: one forest plot of every metric (it was one chart per metric before)
    html = render_html(ctx)
    charts = re.findall(r'<svg[^>]*class="chart[^"]*"[^>]*>', html)
    assert any('class="chart forest"' in tag for tag in charts)
    for tag in charts:
        width = float(re.search(r'width="([\d.]+)"', tag).group(1))
        height = float(re.search(r'height="([\d.]+)"', tag).group(1))
        vb = [float(x) for x in re.search(r'viewBox="([^"]+)"', tag).group(1).split()]
        assert width > 0 and height > 0
        assert vb == [0, 0, width, height]
    forest = html[
        html.index('class="chart forest"') : html.index(
            "</svg>", html.index('class="chart forest"')
        )
    ]
    rows = sum(len(m["comparisons"]) for m in fixture_results["metrics"])
    assert forest.count('<circle class="estimate"') == rows
    assert "MDE +10.00%" in html  # the primary's MDE is marked
    assert "margin +5.00%" in html  # the guardrail's margin, on the harm side (lower is better)
    assert "@media print" in html


def test_report_loads_nothing_from_outside(ctx):
    html = render_html(ctx)
    assert not EXTERNAL.search(html), EXTERNAL.search(html)


def test_external_check_would_catch_a_remote_asset():
    # the guard above can fail: a stylesheet or script by URL is caught
    assert EXTERNAL.search('<link rel="stylesheet" href="https://cdn.example/x.css">')
    assert EXTERNAL.search('<script src="/x.js"></script>')
    assert EXTERNAL.search("<style>body{background:url(https://x/y.png)}</style>")


def test_chart_places_estimates_on_the_axis_and_marks_significance():
    plot = forest_plot(
        "t",
        [
            ForestInput("b vs a", 0.1, 0.0, 0.2, True, 0.15, "MDE +15.00%"),
            ForestInput("c vs a", -0.05, -0.1, 0.0, False),
        ],
    )
    b, c = plot.rows
    assert c.x_est < plot.zero_x < b.x_est  # negative lift left of zero, positive right
    assert b.filled and not c.filled  # filled = significant, hollow = not
    assert "significant" in b.text and "n.s." in c.text  # said in words as well
    assert b.x_low < b.x_est < b.marker_x < b.x_high  # the MDE (+15%) inside the CI, right of +10%


def test_chart_says_when_an_interval_is_not_computable():
    plot = forest_plot("t", [ForestInput("b vs a", None, None, None, False)])
    assert plot.rows[0].text == "not computable" and plot.rows[0].x_est is None
    assert plot.height > 0


def test_recorded_decision_is_shown_and_flagged_when_it_differs(
    ctx, fixture_experiment, fixture_metrics, fixture_results
):
    assert 'id="decision-differs"' not in render_html(ctx)
    fixture_experiment["decision"] = {
        "decision": "ship",
        "variant": "treatment",
        "rationale": "CEO liked it",
        "decided_by": "pm",
        "decided_at": "2025-01-10T00:00:00Z",
    }
    differs = make_ctx(fixture_experiment, fixture_metrics, fixture_results)
    html = render_html(differs)
    assert 'id="decision-differs"' in html and "CEO liked it" in html
    assert "differs from the recommendation" in render_markdown(differs)
    fixture_experiment["decision"] = {
        "decision": "roll_back",
        "variant": None,
        "rationale": "errors",
        "decided_by": "pm",
        "decided_at": "2025-01-10T00:00:00Z",
    }
    same = make_ctx(fixture_experiment, fixture_metrics, fixture_results)
    assert 'id="decision-differs"' not in render_html(same)
    assert "differs" not in render_markdown(same)


def test_a_report_without_results_keeps_the_layout(fixture_experiment, fixture_metrics):
    fixture_experiment["status"] = "draft"
    ctx = make_ctx(
        fixture_experiment, fixture_metrics, None, note="No results: the experiment is draft."
    )
    html = render_html(ctx)
    for sid, _ in SECTIONS:
        assert f'<section id="{sid}">' in html
    assert "No results: the experiment is draft." in html
    assert "No results: the experiment is draft." in render_markdown(ctx)


def test_index_lists_experiments_with_health_and_links(xss):
    rows = [
        IndexRow("new-checkout", xss, "pm", "running", "mismatch", 3, "invalid", 0.5),
        IndexRow("old-banner", "Banner", "pm", "draft", "", None, None, None),
    ]
    html = render_index(rows, NOW)
    assert '<a href="/v1/experiments/new-checkout/report">' in html
    assert "MISMATCH" in html and "Invalid" in html and "50.00%" in html
    assert "<script" not in html
    assert not EXTERNAL.search(html)
    assert "No experiments yet" in render_index([], NOW)
