"""The scheduled interaction check end to end: exposures and conversions through /v1/events, two
running experiments sharing units, the alert and its webhook."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np


def _events(rng: np.random.Generator, n: int, rate: Any) -> list[dict[str, Any]]:
    ts = datetime.now(UTC) - timedelta(minutes=30)
    out: list[dict[str, Any]] = []
    for i in range(n):
        unit = f"u-{i}"
        va = "treatment" if rng.random() < 0.5 else "control"
        vb = "treatment" if rng.random() < 0.5 else "control"
        for exp, v in (("exp-a", va), ("exp-b", vb)):
            out.append(
                {
                    "event_id": str(uuid.uuid4()),
                    "type": "exposure",
                    "experiment": exp,
                    "variant": v,
                    "unit_id": unit,
                    "timestamp": ts.isoformat(),
                }
            )
        if rng.random() < rate(va == "treatment", vb == "treatment"):
            out.append(
                {
                    "event_id": str(uuid.uuid4()),
                    "type": "conversion",
                    "name": "conversion",
                    "unit_id": unit,
                    "timestamp": (ts + timedelta(minutes=5)).isoformat(),
                }
            )
    return out


def _setup(client: Any, keys: Any, make_experiment: Any, events: list[dict[str, Any]]) -> None:
    make_experiment("exp-a", start=True)
    make_experiment("exp-b", start=True)
    make_experiment("exp-c", start=True)  # running, but shares no unit with the others
    for start in range(0, len(events), 5000):
        r = client.post(
            "/v1/events", json={"events": events[start : start + 5000]}, headers=keys["sdk"]
        )
        assert r.status_code == 200 and r.json()["rejected"] == [], r.text


def test_an_injected_interaction_raises_an_alert_and_its_webhook(
    client: Any, admin: dict[str, str], keys: Any, make_experiment: Any, receiver: Any
) -> None:
    hook = client.post(
        "/v1/webhooks",
        json={"url": receiver.url, "event_types": ["alert.interaction"]},
        headers=admin,
    ).json()
    receiver.secret = hook["secret"]
    rng = np.random.default_rng(1)
    # A's treatment helps only the units that also see B's treatment
    _setup(client, keys, make_experiment, _events(rng, 3000, lambda a, b: 0.35 if a and b else 0.1))
    r = client.post("/v1/alerts/check", headers=admin)
    assert r.status_code == 200, r.text
    report = r.json()
    pairs = {(i["experiment"], i["other"]): i for i in report["interactions"]}
    assert set(pairs) == {("exp-a", "exp-b"), ("exp-b", "exp-a")}  # exp-c shares nothing
    ab = pairs[("exp-a", "exp-b")]
    assert ab["found"] and ab["raised"] and ab["shared_units"] == 3000
    assert ab["p_value"] < 1e-6
    (test,) = ab["tests"]
    assert test["treatment"] == "treatment" and test["other_variant"] == "treatment"
    assert 0.15 < test["difference"] < 0.35
    items = client.get("/v1/alerts?type=interaction", headers=admin).json()["items"]
    assert {(a["experiment"], a["condition"]) for a in items} == {
        ("exp-a", "exp-b"),
        ("exp-b", "exp-a"),
    }
    again = client.post("/v1/alerts/check", headers=admin).json()
    assert not any(i["raised"] for i in again["interactions"])  # raised once
    receiver.wait_for(lambda: len(receiver.verified) == 2)
    assert {p["payload"]["type"] for p in receiver.verified} == {"alert.interaction"}
    md = client.get("/v1/experiments/exp-a/report?format=md", headers=admin).text
    assert "Interaction with another experiment" in md or "interaction" in md


def test_independent_experiments_raise_no_interaction(
    client: Any, admin: dict[str, str], keys: Any, make_experiment: Any
) -> None:
    rng = np.random.default_rng(2)
    # both have effects, and they add up
    _setup(
        client,
        keys,
        make_experiment,
        _events(rng, 3000, lambda a, b: 0.1 + 0.08 * a + 0.08 * b),
    )
    report = client.post("/v1/alerts/check", headers=admin).json()
    assert len(report["interactions"]) == 2
    assert not any(i["found"] for i in report["interactions"])
    assert all(i["p_value"] is not None and i["p_value"] > 0.001 for i in report["interactions"])
    assert client.get("/v1/alerts?type=interaction", headers=admin).json()["total"] == 0


def test_a_share_link_does_not_name_the_experiments_its_report_overlaps(
    client: Any, admin: dict[str, str], keys: Any, make_experiment: Any
) -> None:
    rng = np.random.default_rng(1)
    _setup(client, keys, make_experiment, _events(rng, 3000, lambda a, b: 0.35 if a and b else 0.1))
    assert client.post("/v1/alerts/check", headers=admin).status_code == 200
    signed_in = client.get("/v1/experiments/exp-a/report", headers=admin).text
    assert 'data-other="exp-b"' in signed_in and "Interaction with &#39;exp-b&#39;" in signed_in
    url = client.post("/v1/experiments/exp-a/share", json={}, headers=admin).json()["url"]
    for fmt in ("html", "md"):
        r = client.get(url, params={"format": fmt})
        assert r.status_code == 200, r.text
        assert "exp-b" not in r.text  # neither the overlaps table nor the alert's message
        assert "exp-c" not in r.text
        assert "another experiment" in r.text
        assert "An interaction with another running experiment was found" in r.text
