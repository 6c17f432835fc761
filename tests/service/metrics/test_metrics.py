"""The metrics catalogue."""

import pytest


def test_create_each_metric_type(client, admin, bodies):
    for key, type_ in (("purchase", "binomial"), ("revenue", "mean"), ("aov", "ratio")):
        r = client.post("/v1/metrics", json=bodies.metric(key, type_), headers=admin)
        assert r.status_code == 201, r.text
    rev = client.get("/v1/metrics/revenue", headers=admin).json()
    assert rev["aggregation"] == "sum" and rev["higher_is_better"] is True
    listed = client.get("/v1/metrics?limit=2", headers=admin).json()
    assert listed["total"] == 3 and len(listed["items"]) == 2
    assert [m["key"] for m in listed["items"]] == ["aov", "purchase"]


def test_mean_count_and_winsorization(client, admin, bodies):
    body = bodies.metric(
        "sessions",
        "mean",
        aggregation="count",
        higher_is_better=False,
        winsorize_lower=0.01,
        winsorize_upper=0.99,
    )
    r = client.post("/v1/metrics", json=body, headers=admin)
    assert r.status_code == 201, r.text
    assert r.json()["winsorize_upper"] == 0.99


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"key": "a1b", "name": "x", "type": "binomial"}, "body", "needs `event`"),
        (
            {"key": "a1b", "name": "x", "type": "ratio", "numerator_event": "n"},
            "body",
            "denominator",
        ),
        (
            {"key": "a1b", "name": "x", "type": "binomial", "event": "e", "aggregation": "sum"},
            "body",
            "only for mean",
        ),
        (
            {"key": "a1b", "name": "x", "type": "mean", "event": "e", "winsorize_upper": 1.5},
            "winsorize_upper",
            "must be in [0.0001, 0.9999]",
        ),
        ({"key": "A!", "name": "x", "type": "mean", "event": "e"}, "key", "pattern"),
        (
            {"key": "a1b", "name": "x", "type": "mean", "event": "e", "higher_is_better": "yes"},
            "higher_is_better",
            "boolean",
        ),
    ],
)
def test_invalid_metrics_are_422_naming_the_field(client, admin, body, field, words):
    r = client.post("/v1/metrics", json=body, headers=admin)
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert any(e["field"] == field and words in e["message"] for e in errors), errors


def test_duplicate_metric_is_409(client, admin, make_metric, bodies):
    make_metric("purchase")
    r = client.post("/v1/metrics", json=bodies.metric("purchase"), headers=admin)
    assert r.status_code == 409 and r.json()["code"] == "duplicate_key"


def test_update_description_and_definition_while_unused(client, admin, make_metric):
    make_metric("purchase")
    r = client.patch("/v1/metrics/purchase", json={"description": "Orders placed"}, headers=admin)
    assert r.status_code == 200 and r.json()["description"] == "Orders placed"
    r = client.patch("/v1/metrics/purchase", json={"event": "order_completed"}, headers=admin)
    assert r.status_code == 200 and r.json()["event"] == "order_completed"
    r = client.patch("/v1/metrics/purchase", json={"type": "mean"}, headers=admin)
    assert r.status_code == 422


def test_metric_used_by_a_running_experiment_cannot_change_definition(
    client, admin, make_experiment, engine
):
    make_experiment(start=True)
    before = client.get("/v1/metrics/conversion", headers=admin).json()
    r = client.patch("/v1/metrics/conversion", json={"event": "other"}, headers=admin)
    assert r.status_code == 409 and r.json()["code"] == "metric_in_use"
    assert "new-checkout" in r.json()["detail"]
    assert client.get("/v1/metrics/conversion", headers=admin).json() == before
    r = client.patch("/v1/metrics/conversion", json={"description": "still fine"}, headers=admin)
    assert r.status_code == 200


def test_metric_used_only_by_a_draft_can_change(client, admin, make_experiment):
    make_experiment()
    r = client.patch("/v1/metrics/conversion", json={"event": "purchase"}, headers=admin)
    assert r.status_code == 200
