"""The view model and both renderings on fixture data: one wording and number format in HTML and
Markdown, warnings as sentences, invalid marking, and the §12/§6 parts (series, slices, looks,
quantiles, overlaps checked)."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser

from service.reports.render import render_html, render_markdown
from service.reports.view import progress_sentence

from .render_helpers import make_view


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def visible(html: str) -> str:
    html = re.sub(r"<style>.*?</style>", "", html, flags=re.S)
    p = _Text()
    p.feed(html)
    return " ".join(p.parts)


def test_power_progress_never_says_more_units_of_fewer_needed():
    # issue 16: "9952 of 6690 units per variant" read as if 9,952 were part of 6,690
    reached = progress_sentence(9952, 6690, 9952 / 6690)
    assert reached.startswith("planned sample reached") and "9,952" in reached
    assert "of 6,690" not in reached and "9952" not in reached
    assert progress_sentence(1926, 6690, 0.288) == (
        "the smallest arm has 1,926 units; the plan needs 6,690 per variant."
    )
    assert "no planned sample size" in progress_sentence(10, None, None)


def test_a_reached_plan_is_worded_the_same_in_html_and_markdown(
    fixture_experiment, fixture_metrics, fixture_results
):
    fixture_results["power"] |= {
        "sample_size_per_variant": 6690,
        "units_so_far": 9952,
        "progress": 1.4876,
    }
    view = make_view(fixture_experiment, fixture_metrics, fixture_results)
    html, md = visible(render_html(view)), render_markdown(view)
    sentence = (
        "planned sample reached: the smallest arm has 9,952 units, the plan needed 6,690 per "
        "variant."
    )
    assert sentence in html and sentence in md
    assert not re.search(r"9,?952 of 6,?690", html + md)


def test_no_unformatted_float_is_shown(fixture_experiment, fixture_metrics, fixture_results):
    fixture_results["metrics"][0]["comparisons"][0]["relative"]["estimate"] = 0.4444002123142252
    fixture_results["power"]["progress"] = 0.674011797409994
    view = make_view(fixture_experiment, fixture_metrics, fixture_results)
    for text in (visible(render_html(view)), render_markdown(view)):
        assert "0.4444002123142252" not in text and "+44.44%" in text
        assert not re.search(r"\d\.\d{6,}", text), re.search(r"\d\.\d{6,}", text)


def test_html_and_markdown_use_the_same_value_labels(
    fixture_experiment, fixture_metrics, fixture_results
):
    view = make_view(fixture_experiment, fixture_metrics, fixture_results)
    html, md = render_html(view), render_markdown(view)
    purchase = html[html.index('id="metric-purchase"') : html.index('id="metric-revenue"')]
    revenue = html[html.index('id="metric-revenue"') : html.index('id="metric-errors"')]
    assert "<th>Rate</th>" in purchase and "<th>Mean</th>" in revenue
    assert "| Variant | Units | Rate | SD |" in md and "| Variant | Units | Mean | SD |" in md
    assert "Mean" not in purchase.split("<tbody>")[0]


def test_warning_codes_are_sentences_with_the_code_in_a_tooltip_or_in_parentheses(
    fixture_experiment, fixture_metrics, fixture_results
):
    view = make_view(fixture_experiment, fixture_metrics, fixture_results)
    html, md = render_html(view), render_markdown(view)
    assert (
        '<span class="warning" title="cuped_missing_covariate" data-code="cuped_missing_covariate">'
        "No pre-period data: CUPED was not applied.</span>"
    ) in html
    assert "No pre-period data: CUPED was not applied. (cuped\\_missing\\_covariate)" in md
    assert ">cuped_missing_covariate<" not in html


def test_an_srm_mismatch_marks_every_number_invalid(
    fixture_experiment, fixture_metrics, fixture_results, tools
):
    fixture_results["srm"] |= {"mismatch": True, "p_value": 1e-9}
    fixture_results["decision"] = {"recommendation": "invalid", "variant": None, "reasons": ["SRM"]}
    view = make_view(fixture_experiment, fixture_metrics, fixture_results)
    html, md = render_html(view), render_markdown(view)
    assert 'id="invalid-banner"' in html and 'class="verdict invalid"' in html
    scorecard = html[html.index('<section id="scorecard">') : html.index('<section id="slices">')]
    cells = re.findall(r'<td class="num([^"]*)" data-field', scorecard)
    assert len(cells) > 10 and all(c == " invalid" for c in cells)
    assert "INVALID — sample ratio mismatch" in md
    row = tools.md_row(md, "(purchase) — primary", "treatment vs control")
    assert all(c.endswith("(invalid)") for c in row[1:7]), row
    assert "invalid" in html[html.index('class="chart forest"') :].split("</svg>")[0]


def test_the_verdict_comes_first_with_every_guardrail(
    fixture_experiment, fixture_metrics, fixture_results
):
    view = make_view(fixture_experiment, fixture_metrics, fixture_results)
    html, md = render_html(view), render_markdown(view)
    assert (
        html.index('id="verdict"')
        < html.index('<section id="over-time">')
        < html.index('<section id="scorecard">')
    )
    verdict = html[html.index('id="verdict"') : html.index('<section id="over-time">')]
    assert 'data-value="roll_back"' in verdict and 'class="badge bad big">ROLL BACK<' in verdict
    assert "+19.98%" in verdict and "[+10.83%, +29.13%]" in verdict  # the primary's lift and CI
    assert "FAIL ✗" in verdict and "SRM" in verdict and "67.40%" in verdict
    assert md.index("## Verdict") < md.index("## 1. Lift over time")


SERIES = {
    "experiment": "new-checkout",
    "phase": 1,
    "snapshot_id": 3,
    "method": "fixed",
    "started_at": "2025-01-01T00:00:00Z",
    "points": [
        {
            "day": d,
            "until": f"2025-01-0{d + 1}T00:00:00Z",
            "final": True,
            "units": {"control": 100 * d, "treatment": 100 * d},
            "metrics": [
                {
                    "metric": "purchase",
                    "role": "primary",
                    "comparisons": [
                        {
                            "variant": "treatment",
                            "control": "control",
                            "units": 100 * d,
                            "control_units": 100 * d,
                            "absolute": {
                                "estimate": 0.01,
                                "ci_low": -0.01,
                                "ci_high": 0.03,
                                "p_value": 0.3,
                            },
                            "relative": {
                                "estimate": 0.1 + d / 100,
                                "ci_low": -0.2 / d,
                                "ci_high": 0.3,
                                "p_value": 0.3,
                            },
                            "p_value_adjusted": 0.3,
                        }
                    ],
                }
            ],
        }
        for d in range(1, 6)
    ],
}


def test_the_lift_over_time_is_an_svg_chart_and_a_table(
    fixture_experiment, fixture_metrics, fixture_results
):
    view = make_view(
        fixture_experiment, fixture_metrics, fixture_results, timeseries=copy.deepcopy(SERIES)
    )
    html, md = render_html(view), render_markdown(view)
    chart = html[html.index('class="chart over-time"') :].split("</svg>")[0]
    assert chart.count("<circle") == 5 and 'class="band"' in chart and 'class="zero"' in chart
    assert "day 5: +15.00% [-4.00%, +30.00%]" in chart
    assert "| 5 | 2025-01-06 00:00 UTC | 500 / 500 | +15.00% | [-4.00%, +30.00%] | 0.3 |" in md


SLICES = {
    "exploratory": True,
    "dimensions": [
        {
            "dimension": "platform",
            "values": {"web": 600, "ios": 400},
            "metrics": [
                {
                    "metric": "purchase",
                    "role": "primary",
                    "slices": [
                        {
                            "value": v,
                            "units": n,
                            "comparisons": [
                                {
                                    "variant": "treatment",
                                    "control": "control",
                                    "units": n // 2,
                                    "control_units": n // 2,
                                    "absolute": {
                                        "estimate": 0.02,
                                        "ci_low": 0.0,
                                        "ci_high": 0.04,
                                        "p_value": 0.04,
                                    },
                                    "relative": {
                                        "estimate": lift,
                                        "ci_low": 0.0,
                                        "ci_high": 0.4,
                                        "p_value": 0.04,
                                    },
                                    "p_value_adjusted": 0.08,
                                    "significant": False,
                                    "warnings": ["zero_control_mean"] if v == "ios" else [],
                                }
                            ],
                        }
                        for v, n, lift in (("web", 600, 0.05), ("ios", 400, 0.31))
                    ],
                }
            ],
            "heterogeneity": [
                {
                    "metric": "purchase",
                    "variant": "treatment",
                    "statistic": 7.1,
                    "df": 1,
                    "p_value": 0.0077,
                    "slices": 2,
                }
            ],
        }
    ],
}


def test_slices_show_the_heterogeneity_verdict(
    fixture_experiment, fixture_metrics, fixture_results
):
    fixture_experiment["dimensions"] = ["platform"]
    results = fixture_results | {
        "snapshot_id": 3,
        "data_until": None,
        "slices": copy.deepcopy(SLICES),
    }
    view = make_view(fixture_experiment, fixture_metrics, results)
    html, md = render_html(view), render_markdown(view)
    section = html[html.index('<section id="slices">') : html.index('<section id="health">')]
    assert (
        "the effect differs between segments (Cochran&#39;s Q = 7.1, df 1, p = 0.0077)" in section
    )
    assert "<td>ios</td>" in section and "+31.00%" in section
    assert 'title="zero_control_mean"' in section and "exploratory" in section
    assert "| ios | 400 | treatment vs control | +31.00% |" in md


def test_group_sequential_looks_quantiles_and_cuped_ratio_are_shown(
    fixture_experiment, fixture_metrics, fixture_results
):
    fixture_experiment["analysis"]["method"] = "group_sequential"
    fixture_results["method"] = "group_sequential"
    fixture_results["group_sequential"] = {
        "spending": "obrien_fleming",
        "rho": None,
        "looks": [
            {
                "look": 1,
                "information_fraction": 0.3,
                "bound": 4.33,
                "nominal_alpha": 1.5e-05,
                "alpha_spent": 1.5e-05,
                "alpha_increment": 1.5e-05,
            },
            {
                "look": 2,
                "information_fraction": 0.6741,
                "bound": 2.6,
                "nominal_alpha": 0.0093,
                "alpha_spent": 0.0094,
                "alpha_increment": 0.0094,
            },
        ],
    }
    c = fixture_results["metrics"][0]["comparisons"][0]
    c["group_sequential"] = {
        "absolute": c["absolute"],
        "relative": c["relative"],
        "look": 2,
        "information_fraction": 0.6741,
        "bound": 2.6,
        "nominal_alpha": 0.0093,
        "crossed": True,
    }
    fixture_metrics["revenue"] |= {"type": "quantile", "quantile": 0.9}
    fixture_results["metrics"][1]["type"] = "quantile"
    fixture_metrics["errors"] |= {"type": "ratio"}
    g = fixture_results["metrics"][2]
    g["type"] = "ratio"
    g["comparisons"][0]["cuped"] = {
        "absolute": c["absolute"],
        "relative": c["relative"],
        "theta": 0.8,
        "variance_reduction": 0.42,
    }
    view = make_view(fixture_experiment, fixture_metrics, fixture_results)
    html, md = render_html(view), render_markdown(view)
    looks = html[html.index('id="looks"') :].split("</table>")[0]
    assert looks.count("<tr>") == 3 and "67.41%" in looks and "0.0093" in looks
    assert "| 2 | 67.41% | 2.6 | 0.0093 | 0.0094 |" in md
    assert "Group sequential, look 2" in html and "bound crossed" in html
    revenue = html[html.index('id="metric-revenue"') : html.index('id="metric-errors"')]
    assert "<th>p90</th>" in revenue and "order statistics" in revenue
    assert "| Variant | Units | p90 | SD |" in md
    assert "CUPED (ratio, delta method)" in html and "variance reduction 42.00%" in md


def test_the_overlaps_checked_are_listed(fixture_experiment, fixture_metrics, fixture_results):
    overlaps = [
        {
            "experiment": "new-checkout",
            "other": "banner",
            "shared_units": 1200,
            "metric": "purchase",
            "p_value": 0.41,
            "found": False,
        },
        {
            "experiment": "banner",
            "other": "new-checkout",
            "shared_units": 1200,
            "metric": "click",
            "p_value": 0.0002,
            "found": True,
        },
        {
            "experiment": "new-checkout",
            "other": "tiny",
            "shared_units": 12,
            "metric": "purchase",
            "skipped": "fewer than 200 shared units",
        },
    ]
    view = make_view(fixture_experiment, fixture_metrics, fixture_results, interactions=overlaps)
    html, md = render_html(view), render_markdown(view)
    table = html[html.index('id="overlaps"') :].split("</table>")[0]
    assert table.count("<tr data-other=") == 3
    assert (
        "NONE FOUND" in table and "INTERACTION" in table and "fewer than 200 shared units" in table
    )
    assert (
        "| banner | banner's effect across this experiment's arms | click | 1,200 | 0.0002 "
        "| INTERACTION |" in md
    )
    none = make_view(fixture_experiment, fixture_metrics, fixture_results, interactions=[])
    assert "No running experiment shares units with this one." in render_html(none)
