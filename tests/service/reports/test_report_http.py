"""The report and index pages through HTTP: roles, formats, end to end from ingested events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

PROBLEM = "application/problem+json"
PAGES = [
    "/",
    "/reports",
    "/v1/experiments/new-checkout/report",
    "/v1/experiments/new-checkout/report?format=md",
]


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def ingest(client: Any, sdk: dict[str, str], key: str, rows: list[tuple[str, str, bool]]) -> None:
    """Send an exposure per (unit, variant) and a `conversion` event when converted."""
    now = datetime.now(UTC)
    events: list[dict[str, Any]] = []
    for unit, variant, converted in rows:
        events.append(
            {
                "event_id": str(uuid.uuid4()),
                "type": "exposure",
                "experiment": key,
                "variant": variant,
                "unit_id": unit,
                "timestamp": _iso(now - timedelta(minutes=5)),
            }
        )
        if converted:
            events.append(
                {
                    "event_id": str(uuid.uuid4()),
                    "type": "conversion",
                    "name": "conversion",
                    "unit_id": unit,
                    "timestamp": _iso(now - timedelta(minutes=1)),
                }
            )
    r = client.post("/v1/events", json={"events": events}, headers=sdk)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == len(events), r.text


@pytest.fixture
def running(
    make_experiment: Any, client: Any, keys: dict[str, dict[str, str]]
) -> list[tuple[str, str, bool]]:
    make_experiment("new-checkout", start=True, title="New <b>checkout</b>")
    # seeded raw rows: 120 units per arm, 10% vs 25% conversion (a true effect)
    rng = np.random.default_rng(20250101)
    rows = [(f"u{i}", "control" if i % 2 == 0 else "treatment", False) for i in range(240)]
    rows = [(u, v, bool(rng.random() < (0.10 if v == "control" else 0.25))) for u, v, _ in rows]
    ingest(client, keys["sdk"], "new-checkout", rows)
    return rows


@pytest.mark.parametrize("path", PAGES)
def test_pages_need_a_key(client: Any, running: Any, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize(
    ("role", "status"), [("viewer", 200), ("editor", 200), ("admin", 200), ("sdk", 403)]
)
def test_pages_admit_readers_only(
    client: Any, keys: Any, running: Any, path: str, role: str, status: int
) -> None:
    r = client.get(path, headers=keys[role])
    assert r.status_code == status, r.text
    if status == 403:
        assert r.headers["content-type"].startswith(PROBLEM)


def test_unknown_experiment_is_a_404_problem(client: Any, keys: Any) -> None:
    r = client.get("/v1/experiments/nope-nope/report", headers=keys["viewer"])
    assert r.status_code == 404
    assert r.headers["content-type"].startswith(PROBLEM)


def test_unknown_format_is_a_422_problem(client: Any, keys: Any, running: Any) -> None:
    r = client.get("/v1/experiments/new-checkout/report?format=pdf", headers=keys["viewer"])
    assert r.status_code == 422
    assert r.headers["content-type"].startswith(PROBLEM)


def test_report_numbers_are_the_results_numbers(
    client: Any, keys: Any, running: Any, tools: Any
) -> None:
    viewer = keys["viewer"]
    results = client.get("/v1/experiments/new-checkout/results", headers=viewer).json()
    r = client.get("/v1/experiments/new-checkout/report", headers=viewer)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    cells = [
        c for c in tools.cells(html) if c[0].startswith(("metrics.", "srm.", "power.", "multiple"))
    ]
    assert len(cells) > 10
    for field, value, text in cells:
        assert value == tools.resolve(results, field), field
        if value is not None:
            tools.assert_shown(text, float(value))
    # and the page agrees with numpy on the raw rows: rates per arm
    for arm in ("control", "treatment"):
        converted = np.array([c for _, v, c in running if v == arm], dtype=float)
        idx = [v["variant"] for v in results["metrics"][0]["variants"]].index(arm)
        (value,) = [c[1] for c in tools.cells(html) if c[0] == f"metrics.0.variants.{idx}.mean"]
        np.testing.assert_allclose(value, converted.mean(), rtol=1e-12)
    assert "New &lt;b&gt;checkout&lt;/b&gt;" in html


def test_markdown_report_has_the_json_numbers(
    client: Any, keys: Any, running: Any, tools: Any
) -> None:
    viewer = keys["viewer"]
    results = client.get("/v1/experiments/new-checkout/results", headers=viewer).json()
    r = client.get("/v1/experiments/new-checkout/report", params={"format": "md"}, headers=viewer)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/markdown")
    md = r.text
    metric = results["metrics"][0]
    c = metric["comparisons"][0]
    row = tools.md_row(md, "(conversion)", "treatment vs control")
    tools.assert_shown(row[1], c["absolute"]["estimate"])
    tools.assert_shown(row[3], c["relative"]["estimate"])
    tools.assert_shown(row[5], c["absolute"]["p_value"])
    for v in metric["variants"]:
        vrow = tools.md_row(md, "(conversion)", v["variant"])
        assert int(vrow[1].replace(",", "")) == v["units"]
        tools.assert_shown(vrow[2], v["mean"])
    rec = results["decision"]["recommendation"]
    label = {
        "keep_running": "Keep running",
        "ship": "Ship",
        "inconclusive": "Inconclusive",
        "roll_back": "Roll back",
        "invalid": "Invalid (do not use these results)",
    }[rec]
    assert f"**Recommendation:** {label}" in md


def test_an_early_stop_and_a_differing_decision_show_in_the_report(
    client: Any, keys: Any, admin: Any, running: Any
) -> None:
    assert client.post("/v1/experiments/new-checkout/stop", headers=admin).status_code == 200
    r = client.post(
        "/v1/experiments/new-checkout/conclude",
        headers=admin,
        json={"decision": "ship", "variant": "treatment", "rationale": "Looks <good>"},
    )
    assert r.status_code == 200, r.text
    results = client.get("/v1/experiments/new-checkout/results", headers=keys["viewer"]).json()
    html = client.get("/v1/experiments/new-checkout/report", headers=keys["viewer"]).text
    # 120 units per arm against ~14,749 planned, stopped within minutes: early, and a peek
    assert 'data-code="early_stop"' in html and 'data-code="peeking"' in html
    assert 'id="recorded-decision" data-value="ship"' in html
    assert "Looks &lt;good&gt;" in html
    assert results["decision"]["recommendation"] != "ship"  # the planned sample is far away
    assert 'id="decision-differs"' in html


def test_draft_report_keeps_the_layout_without_results(
    client: Any, keys: Any, make_experiment: Any
) -> None:
    make_experiment("draft-one")
    r = client.get("/v1/experiments/draft-one/report", headers=keys["viewer"])
    assert r.status_code == 200
    assert "the experiment is draft" in r.text
    assert '<section id="scorecard">' in r.text


def test_index_lists_every_experiment_with_health(
    client: Any, keys: Any, make_experiment: Any, running: Any
) -> None:
    make_experiment("draft-one", title="Draft <i>one</i>")
    results = client.get("/v1/experiments/new-checkout/results", headers=keys["viewer"]).json()
    for path in ("/", "/reports"):
        r = client.get(path, headers=keys["viewer"])
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        html = r.text
        assert '<a href="/v1/experiments/new-checkout/report">' in html
        assert '<a href="/v1/experiments/draft-one/report">' in html
        assert "Draft &lt;i&gt;one&lt;/i&gt;" in html
        row = html[html.index('data-key="new-checkout"') :].split("</tr>")[0]
        assert "running" in row
        assert ("MISMATCH" if results["srm"]["mismatch"] else "OK") in row
        assert f">{results['multiple_exposures']}<" in row
