"""Health alerts: raised once per condition from real ingested data, listed at /v1/alerts."""

from __future__ import annotations

import threading
from datetime import timedelta

from scipy.stats import chisquare


def run_checks():
    from service.alerts.service import run_checks as run

    return run()


def ingest(client, keys, events):
    r = client.post("/v1/events", json={"events": events}, headers=keys["sdk"])
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == len(events)


def test_srm_is_raised_once_and_sent_as_a_webhook(
    client, admin, keys, make_experiment, exposures, receiver
):
    hook = client.post(
        "/v1/webhooks", json={"url": receiver.url, "event_types": ["alert.srm"]}, headers=admin
    ).json()
    receiver.secret = hook["secret"]
    make_experiment("lopsided", start=True)
    ingest(client, keys, exposures("lopsided", {"control": 600, "treatment": 400}))
    # scipy: χ² = 40 on 1 df against 50/50 weights; p ≈ 2.5e-10, far below srm_threshold 0.001.
    assert chisquare([600, 400], [500, 500]).pvalue < 0.001
    r = client.post("/v1/alerts/check", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["experiments"][0]["raised"] == ["srm"], r.text
    assert run_checks().raised == 0  # the same condition is not raised again
    items = client.get("/v1/alerts?experiment=lopsided", headers=keys["viewer"]).json()["items"]
    assert [a["type"] for a in items] == ["srm"]
    assert items[0]["details"]["observed"] == {"control": 600, "treatment": 400}
    receiver.wait_for(lambda: len(receiver.verified) == 1)
    payload = receiver.verified[0]["payload"]
    assert payload["type"] == "alert.srm" and payload["data"]["experiment"] == "lopsided"


def test_balanced_traffic_raises_nothing(client, admin, keys, make_experiment, exposures):
    make_experiment("balanced", start=True)
    ingest(client, keys, exposures("balanced", {"control": 300, "treatment": 300}))
    assert run_checks().raised == 0
    assert client.get("/v1/alerts", headers=admin).json()["total"] == 0


def test_decision_ready_when_the_planned_sample_is_reached(
    client, admin, keys, make_experiment, exposures
):
    exp = make_experiment(
        "ready",
        start=True,
        baseline={"rate": 0.5},
        primary_metric={"metric": "conversion", "mde": 0.5},
    )
    n = exp["sample_size_per_variant"]
    assert 0 < n < 200
    ingest(client, keys, exposures("ready", {"control": n - 1, "treatment": n - 1}))
    assert run_checks().raised == 0
    ingest(client, keys, exposures("ready", {"control": 1, "treatment": 1}, prefix="late"))
    # Alerts read the results snapshot (product.md §12): the new units count once refreshed.
    assert client.post("/v1/experiments/ready/results/refresh", headers=admin).status_code == 202
    report = run_checks()
    assert report.experiments[0].raised == ["decision_ready"]


def test_guardrail_failure_is_raised_per_metric_and_variant(
    client, admin, keys, make_metric, make_experiment, exposures
):
    make_metric("conversion")
    make_metric("error_rate", higher_is_better=False)
    make_experiment("harmful", start=True, guardrails=[{"metric": "error_rate", "margin": 0.02}])
    events = exposures("harmful", {"control": 400, "treatment": 400})
    ts = events[0]["timestamp"].replace("+00:00", "Z")
    conversions = []
    # 5% errors in control, 40% in treatment: far beyond a 2% relative margin.
    for variant, errors in (("control", 20), ("treatment", 160)):
        for i in range(errors):
            conversions.append(
                {
                    "event_id": f"err-{variant}-{i}",
                    "type": "conversion",
                    "name": "error_rate",
                    "unit_id": f"u-{variant}-{i}",
                    "timestamp": ts.replace("Z", "+00:00"),
                }
            )
    ingest(client, keys, events)
    # conversions a minute after the exposures, inside each unit's window
    from datetime import datetime

    later = (datetime.fromisoformat(events[0]["timestamp"]) + timedelta(minutes=1)).isoformat()
    ingest(client, keys, [c | {"timestamp": later} for c in conversions])
    results = client.get("/v1/experiments/harmful/results", headers=admin).json()
    guard = next(m for m in results["metrics"] if m["role"] == "guardrail")
    assert guard["comparisons"][0]["guardrail"]["status"] == "fail"
    raised = run_checks().experiments[0].raised
    assert raised == ["guardrail_failed"]
    [alert] = client.get("/v1/alerts?type=guardrail_failed", headers=admin).json()["items"]
    assert alert["condition"] == "error_rate:treatment"


def test_overdue_and_stalled_from_the_clock(client, admin, make_experiment, set_times):
    exp = make_experiment("late-runner", start=True, expected_daily_units=5000.0)
    days = exp["planned_duration_days"]
    set_times("late-runner", timedelta(days=days, hours=1))
    types = sorted(run_checks().experiments[0].raised)
    # no exposure at all since the phase started days ago: the stream is stalled too
    assert types == ["overdue", "stalled"]
    assert run_checks().raised == 0


def test_a_fresh_experiment_is_not_stalled(client, admin, make_experiment, set_times):
    make_experiment("fresh", start=True)
    set_times("fresh", timedelta(hours=23))
    assert run_checks().raised == 0
    set_times("fresh", timedelta(hours=25))
    assert run_checks().experiments[0].raised == ["stalled"]


def test_concurrent_schedulers_raise_each_alert_once(client, admin, make_experiment, set_times):
    make_experiment("raced", start=True, expected_daily_units=5000.0)
    set_times("raced", timedelta(days=60))
    reports = []
    threads = [threading.Thread(target=lambda: reports.append(run_checks())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(r.raised for r in reports) == 2
    assert client.get("/v1/alerts?experiment=raced", headers=admin).json()["total"] == 2


def test_resolve_and_filter_alerts(client, admin, keys, make_experiment, set_times):
    make_experiment("resolvable", start=True)
    set_times("resolvable", timedelta(days=3))
    run_checks()
    [alert] = client.get("/v1/alerts?open=true", headers=admin).json()["items"]
    r = client.post(f"/v1/alerts/{alert['id']}/resolve", headers=keys["editor"])
    assert r.status_code == 200 and r.json()["resolved_by"].startswith("test-editor")
    assert client.post(f"/v1/alerts/{alert['id']}/resolve", headers=admin).status_code == 409
    assert client.get("/v1/alerts?open=true", headers=admin).json()["total"] == 0
    assert client.get("/v1/alerts?open=false", headers=admin).json()["total"] == 1
    assert client.post("/v1/alerts/999999/resolve", headers=admin).status_code == 404


def test_list_alerts_function_for_reports(client, make_experiment, set_times):
    from service.alerts.service import list_alerts
    from service.db import open_session

    make_experiment("shown", start=True)
    set_times("shown", timedelta(days=2))
    run_checks()
    with open_session() as session:
        assert [a.type.value for a in list_alerts(session, "shown")] == ["stalled"]
        assert list_alerts(session, "other") == []


def test_trialbook_check_command(client, make_experiment, set_times, capsys):
    from service.cli import main

    make_experiment("cron", start=True)
    set_times("cron", timedelta(days=2))
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert '"raised": 1' in out


def test_alerts_role_matrix(client, keys):
    assert client.get("/v1/alerts").status_code == 401
    assert client.get("/v1/alerts", headers=keys["sdk"]).status_code == 403
    for role in ("viewer", "editor", "admin"):
        assert client.get("/v1/alerts", headers=keys[role]).status_code == 200
    for role in ("viewer", "sdk", "editor"):
        assert client.post("/v1/alerts/check", headers=keys[role]).status_code == 403
    for role in ("viewer", "sdk"):
        assert client.post("/v1/alerts/1/resolve", headers=keys[role]).status_code == 403
    assert client.post("/v1/alerts/check").status_code == 401


def test_findings_from_a_results_object(results_public):
    from service.alerts.service import findings_from_results

    results = {
        "srm": {"mismatch": False, "p_value": 0.4},
        "metrics": [
            {
                "metric": "latency",
                "role": "guardrail",
                "comparisons": [
                    {"variant": "b", "guardrail": {"status": "inconclusive", "margin": 0.05}},
                    {
                        "variant": "c",
                        "guardrail": {"status": "fail", "margin": 0.05},
                        "relative": {"estimate": 0.2},
                    },
                ],
            },
            {
                "metric": "conversion",
                "role": "primary",
                "comparisons": [{"variant": "c", "guardrail": None}],
            },
        ],
        "power": {"progress": 0.99},
    }
    found = findings_from_results(results_public(results))
    assert [(f.type.value, f.condition) for f in found] == [("guardrail_failed", "latency:c")]
