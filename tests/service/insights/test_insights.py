"""Portfolio insights through HTTP, from outcome snapshots taken at stop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from numpy.testing import assert_allclose


def results(recommendation, variant=None, lift=0.0, significant=False, srm=False, progress=1.2):
    """A §6 results object with only the fields the snapshot reads."""
    return {
        "srm": {"mismatch": srm},
        "metrics": [
            {
                "metric": "conversion",
                "role": "primary",
                "higher_is_better": True,
                "comparisons": [
                    {
                        "variant": "treatment",
                        "significant": significant,
                        "absolute": {"estimate": lift},
                        "relative": {"estimate": lift},
                    }
                ],
            }
        ],
        "power": {"progress": progress},
        "decision": {"recommendation": recommendation, "variant": variant},
    }


CASES = {
    # key: (results at stop, decision recorded)
    "won": (results("ship", "treatment", 0.05, True), ("ship", "treatment")),
    "ignored": (results("roll_back", None, -0.04, True), ("ship", "treatment")),
    "flat": (results("inconclusive", srm=True, progress=0.5), ("inconclusive", None)),
    "broken": (results("invalid", srm=True), ("roll_back", None)),
}


@pytest.fixture
def portfolio(client, admin, make_experiment, set_times, monkeypatch, results_public):
    from service.insights import service

    monkeypatch.setattr(
        service, "results_provider", lambda _s, exp: results_public(CASES[exp.key][0])
    )
    make_experiment("draft-one")
    make_experiment("live-one", start=True)
    for key, (_, (decision, variant)) in CASES.items():
        make_experiment(key, start=True, expected_daily_units=5000.0)  # planned 7 days
        set_times(key, timedelta(days=10))
        assert client.post(f"/v1/experiments/{key}/stop", headers=admin).status_code == 200
        body = {"decision": decision, "rationale": "see report"}
        if variant:
            body["variant"] = variant
        r = client.post(f"/v1/experiments/{key}/conclude", json=body, headers=admin)
        assert r.status_code == 200, r.text


def test_insights_summarise_the_portfolio(client, keys, portfolio):
    r = client.get("/v1/insights", headers=keys["viewer"])
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["experiments_by_status"] == {
        "draft": 1,
        "running": 1,
        "paused": 0,
        "stopped": 0,
        "concluded": 4,
        "archived": 0,
    }
    month = datetime.now(UTC).strftime("%Y-%m")
    assert out["concluded_per_month"] == [{"month": month, "count": 4}]
    assert out["outcomes"]["counts"] == {"ship": 2, "roll_back": 1, "inconclusive": 1}
    assert out["outcomes"]["shares"] == {"ship": 0.5, "roll_back": 0.25, "inconclusive": 0.25}
    # only "won" beat control significantly in the good direction
    assert out["win_rate"] == {"numerator": 1, "denominator": 4, "share": 0.25}
    # started: live-one + the four; SRM in "flat" and "broken"
    assert out["srm"] == {"numerator": 2, "denominator": 5, "share": 0.4}
    # won (ship→ship), flat (inconclusive→inconclusive), broken (invalid→not ship) followed;
    # ignored (roll_back→ship) did not
    assert out["followed_recommendation"] == {"numerator": 3, "denominator": 4, "share": 0.75}
    assert out["duration"]["experiments"] == 4
    assert out["duration"]["median_planned_days"] == 7
    assert_allclose(out["duration"]["median_actual_days"], 10.0, atol=0.01)
    assert out["stopped_early"] == 1  # "flat" stopped at half its planned sample


def test_outcome_snapshot_for_the_report(client, portfolio):
    from service.db import open_session
    from service.insights.service import outcome_of

    with open_session() as session:
        won = outcome_of(session, "won")
        assert won is not None and won.primary_winner == "treatment"
        assert won.recommendation == "ship" and won.stopped_early is False
        assert outcome_of(session, "draft-one") is None


def test_empty_portfolio_has_null_shares(client, keys):
    out = client.get("/v1/insights", headers=keys["admin"]).json()
    assert out["win_rate"]["share"] is None and out["srm"]["share"] is None
    assert out["duration"]["median_actual_days"] is None


def test_stop_snapshots_the_real_analysis(client, admin, make_experiment):
    from service.db import open_session
    from service.insights.service import outcome_of

    make_experiment("real", start=True)
    assert client.post("/v1/experiments/real/stop", headers=admin).status_code == 200
    with open_session() as session:
        snap = outcome_of(session, "real")
    assert snap is not None and snap.error is None
    assert snap.recommendation is not None and snap.stopped_early is True


def test_a_failing_analysis_never_blocks_stop(client, admin, make_experiment, monkeypatch):
    from service.insights import service

    def boom(_s, _e):
        raise RuntimeError("analysis down")

    monkeypatch.setattr(service, "results_provider", boom)
    make_experiment("resilient", start=True)
    r = client.post("/v1/experiments/resilient/stop", headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "stopped"


def test_insights_role_matrix(client, keys):
    assert client.get("/v1/insights").status_code == 401
    assert client.get("/v1/insights", headers=keys["sdk"]).status_code == 403
    for role in ("viewer", "editor", "admin"):
        assert client.get("/v1/insights", headers=keys[role]).status_code == 200
