"""PATCH of a draft against its template: the rules of the registered version, and approvals that
a protocol change clears."""

from __future__ import annotations

from typing import Any

GUARDED = {"guardrails": [{"metric": "error_rate", "margin": 0.02}]}
STANDARD = {
    "key": "standard",
    "name": "Standard protocol",
    "defaults": {"analysis": {"correction": "bh"}},
    "rules": {
        "required_guardrails": [{"metric": "error_rate", "max_margin": 0.02}],
        "allowed_primary_metrics": ["conversion"],
        "max_secondary_metrics": 1,
    },
}
GATED = {
    "key": "gated",
    "name": "Gated",
    "rules": {"approval_required": True, "max_secondary_metrics": 1},
}


def setup_catalogue(make_metric: Any) -> None:
    make_metric("conversion")
    make_metric("error_rate", higher_is_better=False)
    make_metric("revenue", "mean")
    make_metric("clicks")


def register(client: Any, editor: Any, bodies: Any, key: str, **extra: Any) -> dict[str, Any]:
    r = client.post("/v1/experiments", json=bodies.experiment(key, **extra), headers=editor)
    assert r.status_code == 201, r.text
    return dict(r.json())


def audit_of(client: Any, key: str, headers: Any) -> list[dict[str, Any]]:
    r = client.get(f"/v1/experiments/{key}/audit", headers=headers)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def test_a_patch_breaking_a_rule_is_a_422_naming_it_and_changes_nothing(
    client, admin, editor, make_metric, bodies
):
    setup_catalogue(make_metric)
    assert client.post("/v1/templates", json=STANDARD, headers=admin).status_code == 201
    before = register(client, editor, bodies, "patched", template="standard", **GUARDED)
    patch = {
        "guardrails": [{"metric": "error_rate", "margin": 0.05}],
        "primary_metric": {"metric": "revenue", "mde": 0.1},
        "baseline": {"mean": 10.0, "sd": 3.0},
        "secondary_metrics": ["conversion", "clicks"],
    }
    r = client.patch("/v1/experiments/patched", json=patch, headers=editor)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    by_field = {e["field"]: e["message"] for e in r.json()["errors"]}
    assert by_field["guardrails.0.margin"].startswith("template.required_guardrail:")
    assert by_field["primary_metric.metric"].startswith("template.allowed_primary_metrics:")
    assert by_field["secondary_metrics"].startswith("template.max_secondary_metrics:")
    assert all("template 'standard' v1" in m for m in by_field.values())
    after = client.get("/v1/experiments/patched", headers=editor).json()
    assert after["guardrails"] == before["guardrails"]
    assert after["primary_metric"] == before["primary_metric"]
    assert [e["action"] for e in audit_of(client, "patched", editor)] == ["create"]
    # dropping the required guardrail is refused on the list itself
    r = client.patch("/v1/experiments/patched", json={"guardrails": []}, headers=editor)
    assert r.status_code == 422
    [err] = r.json()["errors"]
    assert err["field"] == "guardrails" and "error_rate" in err["message"]


def test_a_patch_gets_exactly_the_errors_a_create_of_the_same_protocol_gets(
    client, admin, editor, make_metric, bodies
):
    setup_catalogue(make_metric)
    client.post("/v1/templates", json=STANDARD, headers=admin)
    register(client, editor, bodies, "same-errors", template="standard", **GUARDED)
    bad = {
        "guardrails": [{"metric": "error_rate", "margin": 0.03}],
        "secondary_metrics": ["revenue", "clicks"],
    }
    created = client.post(
        "/v1/experiments",
        json=bodies.experiment("other-key", template="standard", **bad),
        headers=editor,
    )
    patched = client.patch("/v1/experiments/same-errors", json=bad, headers=editor)
    assert created.status_code == patched.status_code == 422
    assert patched.json()["errors"] == created.json()["errors"]
    assert len(patched.json()["errors"]) == 2


def test_a_patch_meets_the_rules_of_the_version_it_was_registered_under(
    client, admin, editor, make_metric, bodies
):
    setup_catalogue(make_metric)
    client.post("/v1/templates", json=STANDARD, headers=admin)
    register(client, editor, bodies, "under-v1", template="standard", **GUARDED)
    # version 2 tightens the margin to 0.01 and allows revenue as primary metric
    v2 = {k: v for k, v in STANDARD.items() if k != "key"}
    v2["rules"] = {
        "required_guardrails": [{"metric": "error_rate", "max_margin": 0.01}],
        "allowed_primary_metrics": ["conversion", "revenue"],
    }
    assert client.put("/v1/templates/standard", json=v2, headers=admin).json()["version"] == 2
    # 0.02 still meets v1 (max 0.02) although v2 would refuse it
    r = client.patch("/v1/experiments/under-v1", json={"title": "Renamed"}, headers=editor)
    assert r.status_code == 200, r.text
    r = client.patch(
        "/v1/experiments/under-v1",
        json={"guardrails": [{"metric": "error_rate", "margin": 0.015}]},
        headers=editor,
    )
    assert r.status_code == 200, r.text
    assert r.json()["template_version"] == 1
    # revenue is allowed by v2 only: the registered v1 refuses it
    r = client.patch(
        "/v1/experiments/under-v1",
        json={
            "primary_metric": {"metric": "revenue", "mde": 0.1},
            "baseline": {"mean": 10.0, "sd": 3.0},
        },
        headers=editor,
    )
    assert r.status_code == 422
    [err] = r.json()["errors"]
    assert err["message"].startswith("template.allowed_primary_metrics:")
    assert "template 'standard' v1" in err["message"]


def test_a_patch_below_the_minimum_duration_is_refused(client, admin, editor, make_metric, bodies):
    setup_catalogue(make_metric)
    tpl = {"key": "long", "name": "Long", "rules": {"minimum_duration_days": 14}}
    client.post("/v1/templates", json=tpl, headers=admin)
    # sample size 14,748 per variant (test_smoke) → 29,496 units: 30 days at 1,000/day, and
    # 6 days (rounded up to the 7-day minimum) at 5,000/day.
    register(client, editor, bodies, "long-one", template="long", expected_daily_units=1000.0)
    r = client.patch(
        "/v1/experiments/long-one", json={"expected_daily_units": 5000.0}, headers=editor
    )
    assert r.status_code == 422
    [err] = r.json()["errors"]
    assert err["field"] == "expected_daily_units"
    assert err["message"].startswith("template.minimum_duration:")
    assert "is 7 days; the minimum is 14" in err["message"]
    r = client.patch(
        "/v1/experiments/long-one", json={"expected_daily_units": None}, headers=editor
    )
    assert r.status_code == 422  # no planned duration at all cannot meet a minimum


def test_a_partial_analysis_patch_keeps_the_template_defaults(
    client, admin, editor, make_metric, bodies
):
    setup_catalogue(make_metric)
    client.post("/v1/templates", json=STANDARD, headers=admin)
    exp = register(client, editor, bodies, "merge-patch", template="standard", **GUARDED)
    assert exp["analysis"]["correction"] == "bh" and exp["analysis"]["cuped"] is True
    r = client.patch(
        "/v1/experiments/merge-patch", json={"analysis": {"cuped": False}}, headers=editor
    )
    assert r.status_code == 200, r.text
    assert r.json()["analysis"]["cuped"] is False
    assert r.json()["analysis"]["correction"] == "bh"
    [entry] = [e for e in audit_of(client, "merge-patch", editor) if e["action"] == "update"]
    assert entry["details"]["fields"] == ["analysis"]


def approved(client: Any, editor: Any, other_editor: Any, bodies: Any, key: str) -> None:
    register(client, editor, bodies, key, template="gated")
    r = client.post(f"/v1/experiments/{key}/approve", json={"note": "ok"}, headers=other_editor)
    assert r.status_code == 200, r.text
    assert r.json()["approved_by"].startswith("reviewer (key ")


def test_a_protocol_change_clears_the_approval_the_template_requires(
    client, admin, editor, other_editor, make_metric, bodies
):
    setup_catalogue(make_metric)
    client.post("/v1/templates", json=GATED, headers=admin)
    approved(client, editor, other_editor, bodies, "gated-exp")
    approver = client.get("/v1/experiments/gated-exp", headers=editor).json()["approved_by"]
    # cosmetic fields keep the approval
    r = client.patch(
        "/v1/experiments/gated-exp",
        json={"title": "Better title", "tags": ["checkout"], "description": "more words"},
        headers=editor,
    )
    assert r.status_code == 200 and r.json()["approved_by"] == approver
    # a rule failure changes nothing, the approval included
    r = client.patch(
        "/v1/experiments/gated-exp",
        json={"secondary_metrics": ["revenue", "clicks"]},
        headers=editor,
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["message"].startswith("template.max_secondary_metrics:")
    assert client.get("/v1/experiments/gated-exp", headers=editor).json()["approved_by"] == approver
    # the effect size the approver reviewed changes: approval cleared
    r = client.patch(
        "/v1/experiments/gated-exp",
        json={"primary_metric": {"metric": "conversion", "mde": 0.2}},
        headers=editor,
    )
    assert r.status_code == 200, r.text
    assert r.json()["approved_by"] is None
    entry = audit_of(client, "gated-exp", editor)[-1]
    assert entry["action"] == "update"
    assert entry["details"]["fields"] == ["primary_metric"]
    assert entry["details"]["approval_cleared"] == approver
    assert entry["note"].startswith(f"approval by {approver} cleared:")
    assert "primary_metric" in entry["note"]
    r = client.post("/v1/experiments/gated-exp/start", headers=editor)
    assert r.status_code == 409 and r.json()["code"] == "approval_required"
    r = client.post("/v1/experiments/gated-exp/approve", headers=other_editor)
    assert r.status_code == 200
    assert client.post("/v1/experiments/gated-exp/start", headers=editor).status_code == 200


def test_resending_the_same_protocol_keeps_the_approval(
    client, admin, editor, other_editor, make_metric, bodies
):
    setup_catalogue(make_metric)
    client.post("/v1/templates", json=GATED, headers=admin)
    approved(client, editor, other_editor, bodies, "resent")
    same = {
        "variants": [
            {"key": "control", "weight": 0.5, "is_control": True},
            {"key": "treatment", "weight": 0.5},
        ],
        "analysis": {"cuped": True},
        "primary_metric": {"metric": "conversion", "mde": 0.1},
    }
    r = client.patch("/v1/experiments/resent", json=same, headers=editor)
    assert r.status_code == 200, r.text
    assert r.json()["approved_by"] is not None
    assert [e["action"] for e in audit_of(client, "resent", editor)] == ["create", "approve"]


def test_handing_the_ownership_to_the_approver_clears_the_approval(
    client, admin, editor, other_editor, make_metric, bodies
):
    setup_catalogue(make_metric)
    client.post("/v1/templates", json=GATED, headers=admin)
    approved(client, editor, other_editor, bodies, "new-owner")
    r = client.patch("/v1/experiments/new-owner", json={"owner": "someone-else"}, headers=editor)
    assert r.json()["approved_by"] is not None
    r = client.patch("/v1/experiments/new-owner", json={"owner": "reviewer"}, headers=editor)
    assert r.status_code == 200 and r.json()["approved_by"] is None
    assert "the approver became the owner" in audit_of(client, "new-owner", editor)[-1]["note"]


def test_an_approval_the_template_does_not_require_is_kept(
    client, admin, editor, other_editor, make_metric, bodies
):
    setup_catalogue(make_metric)
    client.post("/v1/templates", json=STANDARD, headers=admin)
    register(client, editor, bodies, "optional", template="standard", **GUARDED)
    assert client.post("/v1/experiments/optional/approve", headers=other_editor).status_code == 200
    r = client.patch(
        "/v1/experiments/optional",
        json={"primary_metric": {"metric": "conversion", "mde": 0.2}},
        headers=editor,
    )
    assert r.status_code == 200 and r.json()["approved_by"].startswith("reviewer")
    assert audit_of(client, "optional", editor)[-1]["note"] is None


def test_a_draft_without_template_is_patched_without_template_rules(
    client, admin, editor, make_metric, bodies
):
    setup_catalogue(make_metric)
    register(client, editor, bodies, "free")
    client.post("/v1/templates", json=STANDARD | {"is_default": True}, headers=admin)
    # the default that appeared later does not apply to an experiment registered before it
    r = client.patch(
        "/v1/experiments/free", json={"secondary_metrics": ["revenue", "clicks"]}, headers=editor
    )
    assert r.status_code == 200, r.text
    assert r.json()["template"] is None
