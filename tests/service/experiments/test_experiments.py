"""The experiment registry: protocol validation, plan, lifecycle, phases, audit trail."""

import pytest


def _errors(r):
    assert r.status_code == 422, r.text
    return {e["field"]: e["message"] for e in r.json()["errors"]}


def test_binomial_sample_size_matches_the_reference(make_experiment):
    # Hand calculation (unpooled normal approximation), also Evan Miller's calculator (two-sided,
    # 10 % baseline, 10 % relative MDE, alpha 0.05, power 0.8): z = 1.959964 + 0.841621,
    # n = z² (0.1·0.9 + 0.11·0.89) / 0.01² = 14,748.0 → 14,749 after ceiling.
    exp = make_experiment()
    assert abs(exp["sample_size_per_variant"] - 14749) <= 1


def test_mean_sample_size_and_planned_duration(client, admin, make_metric, bodies):
    make_metric("revenue", "mean")
    body = bodies.experiment(
        primary_metric={"metric": "revenue", "mde": 0.05},
        baseline={"mean": 50.0, "sd": 20.0},
        expected_daily_units=1000,
    )
    r = client.post("/v1/experiments", json=body, headers=admin)
    assert r.status_code == 201, r.text
    # 2σ²(z₀.₉₇₅ + z₀.₈)²/δ² = 2·400·7.848861/2.5² = 1004.65 → 1,005 (hand calculation)
    assert abs(r.json()["sample_size_per_variant"] - 1005) <= 1
    # 2 × 1,005 units at 1,000/day is 3 days, but never less than one weekly cycle
    assert r.json()["planned_duration_days"] == 7


def test_planned_duration_longer_than_a_week(client, admin, make_metric, bodies):
    make_metric()
    r = client.post(
        "/v1/experiments", json=bodies.experiment(expected_daily_units=2000), headers=admin
    )
    # 2 × 14,749 units / 2,000 per day = 14.7 → 15 days
    assert r.json()["planned_duration_days"] == 15


def test_two_controls_is_a_422_on_variants(client, admin, make_metric, bodies):
    make_metric()
    body = bodies.experiment(
        variants=[
            {"key": "a", "weight": 0.5, "is_control": True},
            {"key": "b", "weight": 0.5, "is_control": True},
        ]
    )
    assert (
        "exactly one variant must have is_control"
        in _errors(client.post("/v1/experiments", json=body, headers=admin))["variants"]
    )


def test_weights_that_do_not_sum_to_one_are_a_422(client, admin, make_metric, bodies):
    make_metric()
    body = bodies.experiment(
        variants=[
            {"key": "a", "weight": 0.6, "is_control": True},
            {"key": "b", "weight": 0.6},
        ]
    )
    msg = _errors(client.post("/v1/experiments", json=body, headers=admin))["variants"]
    assert "sum to 1.2" in msg and "must sum to 1" in msg


def test_alpha_out_of_range_is_a_422(client, admin, make_metric, bodies):
    make_metric()
    errors = _errors(
        client.post("/v1/experiments", json=bodies.experiment(alpha=0.7), headers=admin)
    )
    assert "0.5" in errors["alpha"]


def test_missing_primary_metric_is_a_422(client, admin, make_metric, bodies):
    make_metric()
    body = bodies.experiment()
    del body["primary_metric"]
    assert "primary_metric" in _errors(client.post("/v1/experiments", json=body, headers=admin))


def test_guardrail_without_margin_is_a_422(client, admin, make_metric, bodies):
    make_metric()
    make_metric("errors")
    body = bodies.experiment(guardrails=[{"metric": "errors"}])
    assert "guardrails.0.margin" in _errors(
        client.post("/v1/experiments", json=body, headers=admin)
    )


def test_unknown_metric_is_a_422_naming_it(client, admin, make_metric, bodies):
    make_metric()
    body = bodies.experiment(secondary_metrics=["ghost"])
    msg = _errors(client.post("/v1/experiments", json=body, headers=admin))["secondary_metrics.0"]
    assert "ghost" in msg and "POST /v1/metrics" in msg


def test_duplicate_experiment_key_is_409(client, admin, make_experiment, bodies):
    make_experiment()
    r = client.post("/v1/experiments", json=bodies.experiment(), headers=admin)
    assert r.status_code == 409 and r.json()["code"] == "duplicate_key"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"key": "ab"}, "key"),
        ({"title": "   "}, "title"),
        ({"hypothesis": ""}, "hypothesis"),
        ({"traffic_fraction": 0}, "traffic_fraction"),
        ({"power": 0.4}, "power"),
        ({"primary_metric": {"metric": "conversion", "mde": 0}}, "primary_metric.mde"),
        ({"baseline": {"mean": 3.0, "sd": 1.0}}, "baseline.rate"),
        ({"overrides": {"u1": "nope"}}, "overrides.u1"),
        ({"analysis": {"correction": "sidak"}}, "analysis.correction"),
        ({"analysis": {"prior_mean": 0.1}}, "analysis.prior_sd"),
        ({"layer": "no-such-layer"}, "layer"),
        ({"targeting": {"attribute": "country", "op": "like", "value": "x"}}, "targeting"),
        ({"secondary_metrics": ["conversion"]}, "secondary_metrics"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_protocol_rules_name_the_field(client, admin, make_metric, bodies, extra, field):
    make_metric()
    errors = _errors(client.post("/v1/experiments", json=bodies.experiment(**extra), headers=admin))
    assert any(f == field or f.startswith(field + ".") for f in errors), errors


def test_structured_hypothesis_is_kept(client, admin, make_metric, bodies):
    make_metric()
    hyp = {
        "change": "one-page checkout",
        "population": "all web buyers",
        "expected_outcome": "+10 % purchases",
        "rationale": "fewer steps",
    }
    r = client.post("/v1/experiments", json=bodies.experiment(hypothesis=hyp), headers=admin)
    assert r.status_code == 201 and r.json()["hypothesis"] == hyp


def test_list_paginates_and_filters(client, admin, make_experiment):
    make_experiment("exp-one", owner="ann")
    make_experiment("exp-two", owner="bob", start=True)
    make_experiment("exp-three", owner="ann")
    page = client.get("/v1/experiments?limit=2", headers=admin).json()
    assert page["total"] == 3 and len(page["items"]) == 2
    rest = client.get("/v1/experiments?limit=2&offset=2", headers=admin).json()
    assert len(rest["items"]) == 1
    keys = {e["key"] for e in page["items"] + rest["items"]}
    assert keys == {"exp-one", "exp-two", "exp-three"}
    ann = client.get("/v1/experiments?owner=ann", headers=admin).json()
    assert {e["key"] for e in ann["items"]} == {"exp-one", "exp-three"}
    running = client.get("/v1/experiments?status=running", headers=admin).json()
    assert [e["key"] for e in running["items"]] == ["exp-two"]
    assert client.get("/v1/experiments?status=bogus", headers=admin).status_code == 422


def test_patch_in_draft_recomputes_the_plan(client, admin, make_experiment):
    make_experiment()
    r = client.patch(
        "/v1/experiments/new-checkout",
        json={"primary_metric": {"metric": "conversion", "mde": 0.2}},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["sample_size_per_variant"] < 14749 / 3


def test_full_lifecycle_writes_one_audit_entry_per_change(client, admin, make_experiment):
    make_experiment()
    for action in ("start", "pause", "resume", "stop"):
        r = client.post(
            f"/v1/experiments/new-checkout/{action}", json={"note": action}, headers=admin
        )
        assert r.status_code == 200, r.text
    r = client.post(
        "/v1/experiments/new-checkout/conclude",
        json={"decision": "ship", "variant": "treatment", "rationale": "clear win"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    exp = r.json()
    assert exp["status"] == "concluded"
    assert exp["decision"]["decision"] == "ship" and exp["decision"]["variant"] == "treatment"
    audit = client.get("/v1/experiments/new-checkout/audit", headers=admin).json()["items"]
    assert [(a["action"], a["from_status"], a["to_status"]) for a in audit] == [
        ("create", None, "draft"),
        ("start", "draft", "running"),
        ("pause", "running", "paused"),
        ("resume", "paused", "running"),
        ("stop", "running", "stopped"),
        ("conclude", "stopped", "concluded"),
    ]
    assert all(a["actor"].startswith("test-admin") for a in audit)
    assert audit[1]["note"] == "start" and audit[-1]["note"] == "clear win"


def test_illegal_transition_is_409_and_changes_nothing(client, admin, make_experiment):
    make_experiment(start=True)
    client.post("/v1/experiments/new-checkout/stop", headers=admin)
    client.post(
        "/v1/experiments/new-checkout/conclude",
        json={"decision": "roll_back", "rationale": "harm"},
        headers=admin,
    )
    before = client.get("/v1/experiments/new-checkout", headers=admin).json()
    audit_before = client.get("/v1/experiments/new-checkout/audit", headers=admin).json()
    r = client.post("/v1/experiments/new-checkout/start", headers=admin)
    assert r.status_code == 409 and r.json()["code"] == "illegal_transition"
    assert client.get("/v1/experiments/new-checkout", headers=admin).json() == before
    assert client.get("/v1/experiments/new-checkout/audit", headers=admin).json() == audit_before


def test_archive_only_from_draft(client, admin, make_experiment):
    make_experiment("exp-one")
    assert (
        client.post("/v1/experiments/exp-one/archive", headers=admin).json()["status"] == "archived"
    )
    make_experiment("exp-two", start=True)
    assert client.post("/v1/experiments/exp-two/archive", headers=admin).status_code == 409


def test_conclude_ship_needs_a_real_variant(client, admin, make_experiment):
    make_experiment(start=True)
    client.post("/v1/experiments/new-checkout/stop", headers=admin)
    url = "/v1/experiments/new-checkout/conclude"
    r = client.post(url, json={"decision": "ship", "rationale": "x"}, headers=admin)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "variant"
    r = client.post(
        url, json={"decision": "ship", "variant": "zzz", "rationale": "x"}, headers=admin
    )
    assert r.status_code == 422
    assert client.get("/v1/experiments/new-checkout", headers=admin).json()["status"] == "stopped"


def test_patch_of_a_running_protocol_is_409_and_changes_nothing(client, admin, make_experiment):
    make_experiment(start=True)
    before = client.get("/v1/experiments/new-checkout", headers=admin).json()
    for change in (
        {"alpha": 0.01},
        {
            "variants": [
                {"key": "control", "weight": 0.4, "is_control": True},
                {"key": "treatment", "weight": 0.6},
            ]
        },
        {"primary_metric": {"metric": "conversion", "mde": 0.3}},
        {"hypothesis": "something else"},
    ):
        r = client.patch("/v1/experiments/new-checkout", json=change, headers=admin)
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "protocol_frozen"
        # new weights are pointed at the phases endpoint
        assert ("/phases" in r.json()["detail"]) == ("variants" in change)
    assert client.get("/v1/experiments/new-checkout", headers=admin).json() == before


def test_notes_tags_and_ramp_are_allowed_after_start(client, admin, make_experiment):
    make_experiment(start=True, traffic_fraction=0.2)
    r = client.patch(
        "/v1/experiments/new-checkout",
        json={"tags": ["checkout"], "traffic_fraction": 0.5, "overrides": {"qa": "treatment"}},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["traffic_fraction"] == 0.5 and r.json()["phase"] == 1
    r = client.post("/v1/experiments/new-checkout/notes", json={"text": "ramped"}, headers=admin)
    assert r.json()["notes"][0]["text"] == "ramped"
    actions = [
        a["action"]
        for a in client.get("/v1/experiments/new-checkout/audit", headers=admin).json()["items"]
    ]
    assert actions == ["create", "start", "update", "note"]


def test_new_weights_go_through_a_new_phase(client, admin, make_experiment):
    make_experiment(start=True)
    new = [
        {"key": "control", "weight": 0.3, "is_control": True},
        {"key": "treatment", "weight": 0.7},
    ]
    r = client.post(
        "/v1/experiments/new-checkout/phases",
        json={"variants": new, "reason": "ramp the treatment"},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    exp = r.json()
    assert exp["phase"] == 2 and exp["variants"][1]["weight"] == 0.7
    assert [p["phase"] for p in exp["phases"]] == [1, 2]
    assert exp["phases"][0]["ended_at"] is not None and exp["phases"][1]["ended_at"] is None
    audit = client.get("/v1/experiments/new-checkout/audit", headers=admin).json()["items"]
    assert audit[-1]["action"] == "new_phase" and audit[-1]["details"]["phase"] == 2
    bad = [
        {"key": "control", "weight": 0.6, "is_control": True},
        {"key": "treatment", "weight": 0.6},
    ]
    r = client.post(
        "/v1/experiments/new-checkout/phases", json={"variants": bad, "reason": "x"}, headers=admin
    )
    assert r.status_code == 422


def test_a_draft_cannot_start_a_phase(client, admin, make_experiment):
    make_experiment()
    r = client.post(
        "/v1/experiments/new-checkout/phases",
        json={"traffic_fraction": 0.5, "reason": "x"},
        headers=admin,
    )
    assert r.status_code == 409


def test_layers_give_disjoint_slices(client, admin, make_experiment):
    r = client.post("/v1/layers", json={"key": "checkout", "holdout_fraction": 0.1}, headers=admin)
    assert r.status_code == 201, r.text
    make_experiment("exp-one", layer="checkout", start=True)
    make_experiment("exp-two", layer="checkout", layer_allocation=0.5, start=True)
    layer = client.get("/v1/layers/checkout", headers=admin).json()
    ranges = sorted(e["layer_range"] for e in layer["experiments"])
    assert ranges == [[0.1, 0.55], [0.55, 1.0]]
    make_experiment("exp-three", layer="checkout")
    r = client.post("/v1/experiments/exp-three/start", headers=admin)
    assert r.status_code == 409 and r.json()["code"] == "layer_full"
    assert client.get("/v1/experiments/exp-three", headers=admin).json()["status"] == "draft"
    r = client.patch("/v1/layers/checkout", json={"holdout_fraction": 0.2}, headers=admin)
    assert r.status_code == 409


def test_patch_refuses_null_for_fields_that_cannot_be_empty(client, admin, make_experiment):
    make_experiment()
    before = client.get("/v1/experiments/new-checkout", headers=admin).json()
    for field in ("title", "variants", "alpha", "primary_metric"):
        r = client.patch("/v1/experiments/new-checkout", json={field: None}, headers=admin)
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == field
    r = client.patch("/v1/experiments/new-checkout", json={"description": None}, headers=admin)
    assert r.status_code == 200
    after = client.get("/v1/experiments/new-checkout", headers=admin).json()
    assert after["title"] == before["title"]
