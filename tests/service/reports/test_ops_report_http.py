"""Template version, approval, alerts and portfolio insights in the report and the index page,
end to end through HTTP: data made through the API, alerts raised by the health check."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from scipy.stats import chisquare

from service.reports.format import when

XSS = '<script>alert("x")</script>&'
XSS_HTML = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;"  # markupsafe
# Anything a browser would fetch (the same guard as test_render.py).
EXTERNAL = re.compile(
    r"<script|<link|<img|<iframe|<object|<embed|\bsrc\s*=|url\(|@import"
    r"|href\s*=\s*[\"']?(https?:)?//",
    re.I,
)


class _Rows(HTMLParser):
    """Rows (attributes and cell texts) of the table with a given id."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id = table_id
        self.depth = 0  # >0 inside the wanted table
        self.rows: list[tuple[dict[str, str | None], list[str]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and (self.depth or a.get("id") == self.table_id):
            self.depth += 1
        elif self.depth and tag == "tr":
            self.rows.append((a, []))
        elif self.depth and tag == "td":
            self.cell = []

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self.depth:
            self.depth -= 1
        elif tag == "td" and self.cell is not None and self.rows:
            self.rows[-1][1].append("".join(self.cell).strip())
            self.cell = None


def table_rows(html: str, table_id: str) -> list[tuple[dict[str, str | None], list[str]]]:
    parser = _Rows(table_id)
    parser.feed(html)
    return [r for r in parser.rows if r[1]]  # header rows have no <td>


def facts(html: str, container_id: str) -> dict[str, str]:
    """``<dt>``/``<dd>`` pairs inside the element with id ``container_id`` (text, unescaped)."""
    start = html.index(f'id="{container_id}"')
    block = html[start : html.index("</dl>", start)]
    pairs = re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", block, re.S)
    return dict(pairs)


def exposures(key: str, counts: dict[str, int], prefix: str = "u") -> list[dict[str, Any]]:
    ts = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    return [
        {
            "event_id": str(uuid.uuid4()),
            "type": "exposure",
            "experiment": key,
            "variant": variant,
            "unit_id": f"{prefix}-{variant}-{i}",
            "timestamp": ts,
        }
        for variant, n in counts.items()
        for i in range(n)
    ]


def ingest(client: Any, keys: Any, events: list[dict[str, Any]]) -> None:
    r = client.post("/v1/events", json={"events": events}, headers=keys["sdk"])
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == len(events)


@pytest.fixture
def watched(client: Any, keys: Any, admin: Any, make_experiment: Any) -> dict[str, Any]:
    """A gated template, an experiment registered under it, approved, started, fed lopsided
    traffic, checked (SRM and decision-ready alerts), and its SRM alert resolved."""
    tpl = {
        "key": "gated",
        "name": f"Gated {XSS}",
        "rules": {
            "approval_required": True,
            "required_guardrails": [{"metric": "error_rate", "max_margin": 0.02}],
        },
    }
    r = client.post(
        "/v1/metrics",
        json={
            "key": "error_rate",
            "name": "Errors",
            "type": "binomial",
            "event": "error",
            "higher_is_better": False,
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    # The template's rules name catalogue metrics, so the metric comes first.
    assert client.post("/v1/templates", json=tpl, headers=keys["admin"]).status_code == 201
    exp = make_experiment(
        "watched",
        template="gated",
        baseline={"rate": 0.5},
        primary_metric={"metric": "conversion", "mde": 0.5},
        guardrails=[{"metric": "error_rate", "margin": 0.02}],
    )
    n = exp["sample_size_per_variant"]
    assert 0 < n < 200  # so that 400 units per arm reach the planned sample
    r = client.post(
        "/v1/experiments/watched/approve", json={"note": f"reviewed {XSS}"}, headers=keys["editor"]
    )
    assert r.status_code == 200, r.text
    assert client.post("/v1/experiments/watched/start", headers=admin).status_code == 200
    ingest(client, keys, exposures("watched", {"control": 600, "treatment": 400}))
    # scipy: χ² = 40 on 1 df against 50/50 weights, p ≈ 2.5e-10 < srm_threshold 0.001.
    assert chisquare([600, 400], [500, 500]).pvalue < 0.001
    r = client.post("/v1/alerts/check", headers=admin)
    assert r.status_code == 200, r.text
    assert sorted(r.json()["experiments"][0]["raised"]) == ["decision_ready", "srm"]
    alerts = client.get("/v1/alerts?experiment=watched", headers=keys["viewer"]).json()["items"]
    srm = next(a for a in alerts if a["type"] == "srm")
    r = client.post(f"/v1/alerts/{srm['id']}/resolve", headers=keys["editor"])
    assert r.status_code == 200, r.text
    alerts = client.get("/v1/alerts?experiment=watched", headers=keys["viewer"]).json()["items"]
    return {"experiment": exp, "alerts": {a["type"]: a for a in alerts}}


def test_report_shows_template_version_approval_and_alerts(
    client: Any, keys: Any, watched: dict[str, Any]
) -> None:
    r = client.get("/v1/experiments/watched/report", headers=keys["viewer"])
    assert r.status_code == 200
    html = r.text
    reg = facts(html, "registration")
    assert reg["Template"] == f"gated v1 — Gated {XSS_HTML}"
    assert "guards error_rate with margin ≤ 2.00%" in reg["Template rules"]
    assert "approval by another editor before start" in reg["Template rules"]
    assert reg["Approval"].startswith("approved by test-editor (key ")
    assert f"reviewed {XSS_HTML}" in reg["Approval"]
    assert "<script" not in html
    # the registration sits in the protocol section, the alerts in the health section
    # (product.md §14 order: verdict, over time, scorecard, slices, health, protocol, ...)
    protocol = html[html.index('<section id="protocol">') : html.index('<section id="deviations">')]
    health = html[html.index('<section id="health">') : html.index('<section id="protocol">')]
    assert 'id="registration"' in protocol and 'id="alerts"' in health
    assert 'id="alert-summary">1 open, 1 resolved<' in health
    rows = table_rows(html, "alerts")
    assert [(a["data-type"], a["data-state"]) for a, _ in rows] == [
        ("decision_ready", "open"),
        ("srm", "resolved"),
    ]
    for attrs, cells in rows:
        alert = watched["alerts"][str(attrs["data-type"])]
        assert attrs["data-alert-id"] == str(alert["id"])
        assert cells[1] == str(alert["phase"])
        assert cells[2] == when(alert["created_at"])
        assert cells[4] == alert["message"]
    srm = watched["alerts"]["srm"]
    assert rows[1][1][3] == f"resolved by {srm['resolved_by']}, {when(srm['resolved_at'])}"
    assert srm["resolved_by"].startswith("test-editor")
    assert rows[0][1][3] == "open"
    assert not EXTERNAL.search(html)


def test_markdown_report_shows_the_same(client: Any, keys: Any, watched: dict[str, Any]) -> None:
    r = client.get("/v1/experiments/watched/report?format=md", headers=keys["viewer"])
    assert r.status_code == 200
    md = r.text
    protocol = md[md.index("## 5. Protocol") : md.index("## 6. Deviations")]
    health = md[md.index("## 4. Health") : md.index("## 5. Protocol")]
    assert "- **Template:** gated v1 — Gated \\<script\\>" in protocol
    assert "- **Approval:** approved by test-editor (key " in protocol
    assert "<script>" not in md
    assert "1 open, 1 resolved" in health
    srm = watched["alerts"]["srm"]
    ready = watched["alerts"]["decision_ready"]
    assert f"| decision\\_ready | 1 | {when(ready['created_at'])} | open |" in health
    assert f"| srm | 1 | {when(srm['created_at'])} | resolved by " in health
    assert health.index("decision\\_ready") < health.index("| srm |")


def test_a_newer_template_version_is_named_and_the_registered_one_kept(
    client: Any, keys: Any, watched: dict[str, Any]
) -> None:
    v2 = {"name": "Gated, version two", "rules": {"approval_required": False}}
    assert client.put("/v1/templates/gated", json=v2, headers=keys["admin"]).status_code == 200
    html = client.get("/v1/experiments/watched/report", headers=keys["viewer"]).text
    reg = facts(html, "registration")
    assert reg["Template"].startswith(f"gated v1 — Gated {XSS_HTML} (the template is now at v2")
    assert "approval by another editor before start" in reg["Template rules"]  # v1's rules


def test_report_without_template_or_alerts_keeps_the_layout(
    client: Any, keys: Any, watched: dict[str, Any], make_experiment: Any
) -> None:
    make_experiment("plain-one")
    html = client.get("/v1/experiments/plain-one/report", headers=keys["viewer"]).text
    reg = facts(html, "registration")
    assert reg == {"Template": "none", "Template rules": "none", "Approval": "not required"}
    # the same rows, in the same order, as the experiment under a template
    other = facts(
        client.get("/v1/experiments/watched/report", headers=keys["viewer"]).text, "registration"
    )
    assert list(other) == list(reg)
    health = html[html.index('<section id="health">') : html.index('<section id="protocol">')]
    assert 'id="alert-summary">0 open, 0 resolved<' in health and 'id="no-alerts"' in health
    md = client.get("/v1/experiments/plain-one/report?format=md", headers=keys["viewer"]).text
    assert "- **Template:** none" in md and "0 open, 0 resolved" in md


def test_a_draft_awaiting_approval_says_so(client: Any, keys: Any, make_experiment: Any) -> None:
    tpl = {"key": "gate2", "name": "Gate", "rules": {"approval_required": True}}
    assert client.post("/v1/templates", json=tpl, headers=keys["admin"]).status_code == 201
    make_experiment("awaiting", template="gate2")
    html = client.get("/v1/experiments/awaiting/report", headers=keys["viewer"]).text
    assert facts(html, "registration")["Approval"] == "required before start, not given yet"


def _insight_cells(html: str) -> dict[str, Any]:
    import json

    out = {}
    for field, value in re.findall(r'data-field="(insights\.[^"]+)" data-value="([^"]*)"', html):
        out[field.removeprefix("insights.")] = json.loads(value.replace("&quot;", '"'))
    return out


def _resolve(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


def test_index_shows_open_alerts_and_the_portfolio_insights(
    client: Any, keys: Any, admin: Any, make_experiment: Any
) -> None:
    make_experiment("lopsided", start=True)
    ingest(client, keys, exposures("lopsided", {"control": 600, "treatment": 400}))
    make_experiment("done-one", start=True)
    ingest(client, keys, exposures("done-one", {"control": 300, "treatment": 300}, prefix="d"))
    make_experiment("draft-two", title=f"Draft {XSS}")
    r = client.post("/v1/alerts/check", headers=admin)
    assert r.status_code == 200, r.text
    raised = {e["experiment"]: e["raised"] for e in r.json()["experiments"]}
    assert raised == {"lopsided": ["srm"], "done-one": []}
    assert client.post("/v1/experiments/done-one/stop", headers=admin).status_code == 200
    r = client.post(
        "/v1/experiments/done-one/conclude",
        json={"decision": "inconclusive", "rationale": "no effect"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    insights = client.get("/v1/insights", headers=keys["viewer"]).json()

    html = client.get("/", headers=keys["viewer"]).text
    assert "<script" not in html and f"Draft {XSS_HTML}" in html
    assert not EXTERNAL.search(html)
    row = html[html.index('data-key="lopsided"') :].split("</tr>")[0]
    assert 'data-open-alerts="1"' in row and ">1 open: srm<" in row
    for key in ("done-one", "draft-two"):
        row = html[html.index(f'data-key="{key}"') :].split("</tr>")[0]
        assert 'data-open-alerts="0"' in row and ">none<" in row

    section = html[html.index('<section id="insights">') :]
    cells = _insight_cells(section)
    assert len(cells) >= 20
    for path, value in cells.items():
        assert value == _resolve(insights, path), path
    # and by hand: 3 experiments, 2 started of which 1 had an SRM, 1 concluded this month
    assert cells["experiments_by_status.running"] == 1
    assert cells["experiments_by_status.concluded"] == 1
    assert cells["experiments_by_status.draft"] == 1
    assert (cells["srm.numerator"], cells["srm.denominator"], cells["srm.share"]) == (1, 2, 0.5)
    assert (
        cells["outcomes.counts.inconclusive"] == 1 and cells["outcomes.shares.inconclusive"] == 1.0
    )
    month = datetime.now(UTC).strftime("%Y-%m")
    assert cells["concluded_per_month.0.count"] == 1 and f"<td>{month}</td>" in section
    assert "Share with SRM" in section and "50.00%" in section

    # a resolved alert leaves the index column
    alert = client.get("/v1/alerts?experiment=lopsided", headers=admin).json()["items"][0]
    assert client.post(f"/v1/alerts/{alert['id']}/resolve", headers=admin).status_code == 200
    html = client.get("/reports", headers=keys["viewer"]).text
    row = html[html.index('data-key="lopsided"') :].split("</tr>")[0]
    assert 'data-open-alerts="0"' in row


def test_index_with_nothing_yet_still_has_the_insights_section(client: Any, keys: Any) -> None:
    html = client.get("/", headers=keys["viewer"]).text
    assert "No experiments yet" in html
    section = html[html.index('<section id="insights">') :]
    assert "No experiment concluded yet." in section
    cells = _insight_cells(section)
    assert cells["srm.denominator"] == 0 and cells["srm.share"] is None


def test_index_still_lists_experiments_when_insights_fail(
    client: Any, keys: Any, make_experiment: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.reports import service

    def broken(session: Any) -> Any:
        raise RuntimeError("insights exploded")

    make_experiment("still-here", start=True)
    monkeypatch.setattr(service, "compute_insights", broken)
    r = client.get("/", headers=keys["viewer"])
    assert r.status_code == 200
    assert 'data-key="still-here"' in r.text
    section = r.text[r.text.index('<section id="insights">') :]
    assert "Insights are unavailable right now" in section
