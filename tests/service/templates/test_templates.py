"""Protocol templates through HTTP: versions, defaults, rules (422 naming the rule), approval."""

from __future__ import annotations

from typing import Any

STANDARD = {
    "key": "standard",
    "name": "Standard protocol",
    "defaults": {
        "alpha": 0.01,
        "power": 0.9,
        "attribution_window_hours": 72.0,
        "analysis": {"correction": "bh", "cuped": False},
    },
    "rules": {
        "required_guardrails": [{"metric": "error_rate", "max_margin": 0.02}],
        "allowed_primary_metrics": ["conversion"],
        "max_secondary_metrics": 1,
    },
}


def guarded(**extra: Any) -> dict[str, Any]:
    return {"guardrails": [{"metric": "error_rate", "margin": 0.02}], **extra}


def setup_catalogue(make_metric: Any) -> None:
    make_metric("conversion")
    make_metric("error_rate", higher_is_better=False)
    make_metric("revenue", "mean")
    make_metric("clicks")


def test_create_get_and_list_templates(client, admin, editor, keys, make_metric):
    setup_catalogue(make_metric)
    r = client.post("/v1/templates", json=STANDARD, headers=admin)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["version"] == 1 and body["latest_version"] == 1
    assert body["defaults"]["alpha"] == 0.01
    assert body["rules"]["required_guardrails"] == [{"metric": "error_rate", "max_margin": 0.02}]
    for role in ("viewer", "sdk", "editor", "admin"):
        r = client.get("/v1/templates/standard", headers=keys[role])
        assert r.status_code == 200, role
        assert [
            t["key"] for t in client.get("/v1/templates", headers=keys[role]).json()["items"]
        ] == ["standard"]
    assert client.post("/v1/templates", json=STANDARD, headers=admin).status_code == 409


def test_update_writes_a_new_immutable_version(client, admin, editor, make_metric):
    setup_catalogue(make_metric)
    client.post("/v1/templates", json=STANDARD, headers=admin)
    v2 = {k: v for k, v in STANDARD.items() if k != "key"} | {"name": "Stricter"}
    v2["defaults"] = {"alpha": 0.005}
    r = client.put("/v1/templates/standard", json=v2, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2
    old = client.get("/v1/templates/standard?version=1", headers=editor).json()
    assert old["defaults"]["alpha"] == 0.01 and old["name"] == "Standard protocol"
    assert old["latest_version"] == 2
    versions = client.get("/v1/templates/standard/versions", headers=editor).json()["items"]
    assert [v["version"] for v in versions] == [1, 2]
    assert client.get("/v1/templates/standard?version=3", headers=editor).status_code == 404


def test_experiment_inherits_defaults_only_where_it_set_nothing(
    client, admin, editor, make_metric, bodies
):
    setup_catalogue(make_metric)
    client.post("/v1/templates", json=STANDARD, headers=admin)
    body = bodies.experiment("tpl-exp", template="standard", power=0.85, **guarded())
    body["analysis"] = {"cuped": True}
    r = client.post("/v1/experiments", json=body, headers=editor)
    assert r.status_code == 201, r.text
    exp = r.json()
    assert exp["template"] == "standard" and exp["template_version"] == 1
    assert exp["alpha"] == 0.01  # from the template
    assert exp["power"] == 0.85  # set by the request: kept
    assert exp["attribution_window_hours"] == 72.0
    assert exp["analysis"]["correction"] == "bh"  # template fills the unset analysis field
    assert exp["analysis"]["cuped"] is True  # the request's own choice wins


def test_changing_a_template_never_changes_registered_experiments(
    client, admin, editor, make_metric, bodies
):
    setup_catalogue(make_metric)
    client.post("/v1/templates", json=STANDARD, headers=admin)
    client.post(
        "/v1/experiments",
        json=bodies.experiment("kept", template="standard", **guarded()),
        headers=editor,
    )
    v2 = {k: v for k, v in STANDARD.items() if k != "key"} | {"defaults": {"alpha": 0.02}}
    client.put("/v1/templates/standard", json=v2, headers=admin)
    exp = client.get("/v1/experiments/kept", headers=editor).json()
    assert exp["template_version"] == 1 and exp["alpha"] == 0.01
    new = client.post(
        "/v1/experiments",
        json=bodies.experiment("later", template="standard", **guarded()),
        headers=editor,
    ).json()
    assert new["template_version"] == 2 and new["alpha"] == 0.02


def test_rule_failures_are_422_naming_rule_and_field(client, admin, editor, make_metric, bodies):
    setup_catalogue(make_metric)
    client.post("/v1/templates", json=STANDARD, headers=admin)
    body = bodies.experiment(
        "bad",
        template="standard",
        primary_metric={"metric": "revenue", "mde": 0.1},
        baseline={"mean": 10.0, "sd": 3.0},
        secondary_metrics=["conversion", "clicks"],
    )
    r = client.post("/v1/experiments", json=body, headers=editor)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    by_field = {e["field"]: e["message"] for e in problem["errors"]}
    assert by_field["guardrails"].startswith("template.required_guardrail:")
    assert "error_rate" in by_field["guardrails"]
    assert by_field["primary_metric.metric"].startswith("template.allowed_primary_metrics:")
    assert by_field["secondary_metrics"].startswith("template.max_secondary_metrics:")
    assert client.get("/v1/experiments/bad", headers=editor).status_code == 404


def test_guardrail_margin_above_the_maximum_is_refused(client, admin, editor, make_metric, bodies):
    setup_catalogue(make_metric)
    client.post("/v1/templates", json=STANDARD, headers=admin)
    body = bodies.experiment(
        "loose", template="standard", guardrails=[{"metric": "error_rate", "margin": 0.05}]
    )
    r = client.post("/v1/experiments", json=body, headers=editor)
    assert r.status_code == 422
    [err] = r.json()["errors"]
    assert err["field"] == "guardrails.0.margin"
    assert err["message"].startswith("template.required_guardrail:") and "0.02" in err["message"]


def test_structured_hypothesis_and_minimum_duration_rules(
    client, admin, editor, make_metric, bodies
):
    setup_catalogue(make_metric)
    tpl = {
        "key": "careful",
        "name": "Careful",
        "rules": {"require_structured_hypothesis": True, "minimum_duration_days": 14},
    }
    assert client.post("/v1/templates", json=tpl, headers=admin).status_code == 201
    r = client.post(
        "/v1/experiments", json=bodies.experiment("short", template="careful"), headers=editor
    )
    by_field = {e["field"]: e["message"] for e in r.json()["errors"]}
    assert by_field["hypothesis"].startswith("template.structured_hypothesis:")
    assert by_field["expected_daily_units"].startswith("template.minimum_duration:")
    hypothesis = {
        "change": "one-page checkout",
        "population": "all buyers",
        "expected_outcome": "+10% purchases",
        "rationale": "fewer steps",
    }
    # sample size 14,748 per variant (test_smoke) → 29,496 units; at 5,000/day that is 6 days,
    # rounded up to the 7-day weekly minimum: below 14.
    fast = bodies.experiment(
        "fast", template="careful", hypothesis=hypothesis, expected_daily_units=5000.0
    )
    r = client.post("/v1/experiments", json=fast, headers=editor)
    assert r.status_code == 422
    assert "is 7 days; the minimum is 14" in r.json()["errors"][0]["message"]
    slow = fast | {"key": "slow", "expected_daily_units": 1000.0}  # 30 days
    r = client.post("/v1/experiments", json=slow, headers=editor)
    assert r.status_code == 201, r.text
    assert r.json()["planned_duration_days"] >= 14


def test_org_default_template_applies_when_none_is_named(
    client, admin, editor, make_metric, bodies
):
    setup_catalogue(make_metric)
    client.post("/v1/templates", json=STANDARD | {"is_default": True}, headers=admin)
    r = client.post("/v1/experiments", json=bodies.experiment("plain"), headers=editor)
    assert r.status_code == 422
    assert r.json()["errors"][0]["message"].startswith("template.required_guardrail:")
    r = client.post("/v1/experiments", json=bodies.experiment("plain", **guarded()), headers=editor)
    assert r.status_code == 201
    assert r.json()["template"] == "standard"
    # A second default replaces the first.
    other = {"key": "lenient", "name": "Lenient", "is_default": True}
    client.post("/v1/templates", json=other, headers=admin)
    assert client.get("/v1/templates/standard", headers=editor).json()["is_default"] is False
    r = client.post("/v1/experiments", json=bodies.experiment("plain2"), headers=editor)
    assert r.status_code == 201 and r.json()["template"] == "lenient"


def test_unknown_template_is_a_422_on_the_template_field(client, editor, make_metric, bodies):
    setup_catalogue(make_metric)
    r = client.post(
        "/v1/experiments", json=bodies.experiment("x-exp", template="nope"), headers=editor
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "template"


def test_start_needs_an_approval_by_another_editor(
    client, admin, editor, other_editor, make_metric, bodies
):
    setup_catalogue(make_metric)
    tpl = {"key": "gated", "name": "Gated", "rules": {"approval_required": True}}
    client.post("/v1/templates", json=tpl, headers=admin)
    client.post(
        "/v1/experiments", json=bodies.experiment("gated-exp", template="gated"), headers=editor
    )
    r = client.post("/v1/experiments/gated-exp/start", headers=editor)
    assert r.status_code == 409 and r.json()["code"] == "approval_required"
    r = client.post("/v1/experiments/gated-exp/approve", headers=editor)
    assert r.status_code == 403 and r.json()["code"] == "self_approval"
    r = client.post(
        "/v1/experiments/gated-exp/approve", json={"note": "looks right"}, headers=other_editor
    )
    assert r.status_code == 200, r.text
    assert r.json()["approved_by"].startswith("reviewer")
    assert client.post("/v1/experiments/gated-exp/approve", headers=other_editor).status_code == 409
    r = client.post("/v1/experiments/gated-exp/start", headers=editor)
    assert r.status_code == 200, r.text
    trail = client.get("/v1/experiments/gated-exp/audit", headers=editor).json()["items"]
    actions = [(e["action"], e["actor"].split(" ")[0]) for e in trail]
    assert ("approve", "reviewer") in actions and ("start", "test-editor") in actions
    assert client.post("/v1/experiments/gated-exp/approve", headers=other_editor).status_code == 409


def test_owner_named_like_the_key_cannot_approve(client, editor, other_editor, make_metric, bodies):
    setup_catalogue(make_metric)
    client.post(
        "/v1/experiments", json=bodies.experiment("owned", owner="reviewer"), headers=editor
    )
    r = client.post("/v1/experiments/owned/approve", headers=other_editor)
    assert r.status_code == 403


def test_template_role_matrix(client, keys):
    body = {"key": "roles", "name": "Roles"}
    assert client.post("/v1/templates", json=body).status_code == 401
    assert client.get("/v1/templates").status_code == 401
    # Templates are the organisation's standard: written by admins only (product.md §10).
    for role in ("viewer", "sdk", "editor"):
        assert client.post("/v1/templates", json=body, headers=keys[role]).status_code == 403
        r = client.put("/v1/templates/roles", json={"name": "x"}, headers=keys[role])
        assert r.status_code == 403
    assert client.post("/v1/templates", json=body, headers=keys["admin"]).status_code == 201
    for role in ("viewer", "sdk", "editor"):
        r = client.put("/v1/templates/roles", json={"name": "x"}, headers=keys[role])
        assert r.status_code == 403
    assert client.get("/v1/templates/roles", headers=keys["admin"]).json()["latest_version"] == 1
    assert client.post("/v1/experiments/whatever/approve").status_code == 401
    for role in ("viewer", "sdk"):
        r = client.post("/v1/experiments/whatever/approve", headers=keys[role])
        assert r.status_code == 403


def test_template_requests_are_strict(client, admin, editor):
    bad = STANDARD | {"defaults": {"alpha": "0.01"}}
    assert client.post("/v1/templates", json=bad, headers=admin).status_code == 422
    bad = STANDARD | {"rules": {"approval_required": 1}}
    assert client.post("/v1/templates", json=bad, headers=admin).status_code == 422
    bad = STANDARD | {"extra": True}
    assert client.post("/v1/templates", json=bad, headers=admin).status_code == 422
