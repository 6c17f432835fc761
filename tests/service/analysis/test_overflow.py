"""Rows stored before ingestion bounded values (issue 12) must not break the analysis for good.

A conversion with ``value`` 1.5e154 (its square overflows a double), 1e200 or ±1e308 is written
straight into the database, as an older server accepted it. Results, the HTML and Markdown
report and the health checks then answer, on SQLite and PostgreSQL: the metric that reads it has
NaN (``null``) estimates with the warning ``non_finite_statistics``, and the other metrics are
analysed as usual. Before the fix: 500 ``ValueError: sum_x2 must be finite`` on SQLite, and on
PostgreSQL ``value out of range: overflow`` from the SQL sum of squares.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.alerts.service import run_checks
from service.db import open_session
from service.events.models import Conversion

KEY = "poisoned"
T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def poisoned_experiment(client: Any, keys: Any, make_metric: Any, make_experiment: Any) -> Any:
    make_metric("revenue", "mean", event="purchase")
    # the same event capped at its 20th and 80th percentiles: finite whatever the poison
    # (PostgreSQL's exact pass compares with the cut points in numeric)
    make_metric(
        "revenue_capped", "mean", event="purchase", winsorize_lower=0.2, winsorize_upper=0.8
    )
    make_metric("aov", "ratio")
    make_metric("latency", "mean", event="latency", higher_is_better=False)
    make_experiment(
        KEY,
        start=True,
        secondary_metrics=["revenue", "revenue_capped", "aov"],
        guardrails=[{"metric": "latency", "margin": 0.1}],
        analysis={"cuped": True, "pre_period_days": 7},
    )
    events: list[dict[str, Any]] = []
    for i in range(40):
        unit, variant = f"u{i}", ("control", "treatment")[i % 2]
        at = (T0 + timedelta(minutes=i)).isoformat()
        later = (T0 + timedelta(minutes=i, seconds=30)).isoformat()
        events.append(
            {
                "event_id": f"x{i}",
                "type": "exposure",
                "experiment": KEY,
                "variant": variant,
                "unit_id": unit,
                "timestamp": at,
            }
        )
        for name, value in (
            ("conversion", 1.0),
            ("purchase", 10.0 + i),
            ("aov_num", 5.0 + i % 3),
            ("aov_den", 1.0 + i % 2),
            ("latency", 100.0 + i % 7),
        ):
            if name == "conversion" and i % 3 == 0:
                continue
            events.append(
                {
                    "event_id": f"{name}-{i}",
                    "type": "conversion",
                    "name": name,
                    "unit_id": unit,
                    "value": value,
                    "timestamp": later,
                }
            )
    r = client.post("/v1/events", json={"events": events}, headers=keys["sdk"])
    assert r.status_code == 200 and r.json()["rejected"] == [], r.text

    def poison(name: str, value: float, unit: str = "u3", *, before: bool = False) -> None:
        """Store a conversion as an unbounded server did (no validation on the way)."""
        at = T0 + (timedelta(days=-1) if before else timedelta(hours=1))
        session = open_session(write=True)
        try:
            session.add(
                Conversion(
                    event_id=f"poison-{name}-{unit}-{value!r}",
                    name=name,
                    unit_id=unit,
                    value=value,
                    ts=at,
                    payload_hash="0" * 32,
                )
            )
            session.commit()
        finally:
            session.close()

    return poison


CASES = [
    ("purchase", [1.5e154], "revenue", False),
    ("purchase", [1e200], "revenue", False),
    ("purchase", [1e308, 1e308], "revenue", False),  # Σx overflows too
    ("purchase", [-1e308, -1e308], "revenue", False),
    ("purchase", [1e200], "revenue", True),  # the CUPED pre-period only
    ("aov_num", [1e200], "aov", False),
    ("aov_den", [-1e308, -1e308], "aov", False),
    ("latency", [1.5e154], "latency", False),
]


def metric(results: dict[str, Any], key: str) -> dict[str, Any]:
    return next(m for m in results["metrics"] if m["metric"] == key)


@pytest.mark.parametrize(("event", "values", "key", "before"), CASES)
def test_results_answer_an_overflow_with_a_warning_not_a_500(
    client, keys, poisoned_experiment, event, values, key, before
):
    for i, value in enumerate(values):
        poisoned_experiment(event, value, unit=f"u{3 + 2 * i}", before=before)
    r = client.get(f"/v1/experiments/{KEY}/results", headers=keys["viewer"])
    assert r.status_code == 200, r.text
    results = r.json()
    bad = metric(results, key)
    (comparison,) = bad["comparisons"]
    assert "non_finite_statistics" in comparison["warnings"]
    assert comparison["absolute"]["estimate"] is None
    assert comparison["significant"] is False
    if key == "latency":
        assert comparison["guardrail"]["status"] == "inconclusive"
    # every other metric is analysed as before, on both databases
    for other in {"conversion", "revenue", "revenue_capped", "aov", "latency"} - {key}:
        (fine,) = metric(results, other)["comparisons"]
        assert "non_finite_statistics" not in fine["warnings"], other
        assert fine["absolute"]["estimate"] is not None, other
    assert results["decision"]["recommendation"] in {"keep_running", "inconclusive"}

    for fmt in ("html", "md"):
        report = client.get(f"/v1/experiments/{KEY}/report?format={fmt}", headers=keys["viewer"])
        assert report.status_code == 200, report.text
        assert key in report.text


def test_the_health_checks_analyse_an_overflowed_experiment_and_say_so(
    client, keys, poisoned_experiment
):
    poisoned_experiment("purchase", 1.5e154)
    report = run_checks()
    (checked,) = [c for c in report.experiments if c.experiment == KEY]
    assert checked.error is None
    assert checked.warnings == ["revenue: non_finite_statistics"]
    r = client.post("/v1/alerts/check", headers=keys["admin"])
    assert r.status_code == 200, r.text
    (over_http,) = [c for c in r.json()["experiments"] if c["experiment"] == KEY]
    assert over_http["warnings"] == ["revenue: non_finite_statistics"]
