"""An editor under an approval template tries every way out, through HTTP (issue 12).

The organisation default requires an approval before start. The editor who registered an
experiment tries to lower the rule (PUT the template), to bring a lenient template of their own
(POST one, or name one written by an editor before templates became admin-only), to drop the
template from the experiment (PATCH), to approve it themselves, and, once it runs, to change it
through a new phase that nobody reviewed. Each way is refused; the experiment never assigns a
unit to a variant without an approval of what runs.
"""

from __future__ import annotations

from typing import Any

import pytest

GATED = {
    "key": "gated-default",
    "name": "Approval before start",
    "is_default": True,
    "rules": {"approval_required": True},
}
LENIENT = {"key": "lenient", "name": "No rules", "rules": {"approval_required": False}}
NEW_VARIANTS = {
    "variants": [
        {"key": "control", "weight": 0.5, "is_control": True},
        {"key": "bold", "weight": 0.5},
    ],
    "reason": "a bolder treatment",
}


def _key(engine: Any, name: str) -> dict[str, str]:
    from service.db import open_session
    from service.keys.models import Role
    from service.keys.service import create_key

    with open_session(write=True) as session:
        created = create_key(session, name=name, role=Role.editor)
    return {"Authorization": f"Bearer {created.key}"}


@pytest.fixture
def gated(client: Any, admin: dict[str, str], make_metric: Any) -> None:
    make_metric("conversion")
    r = client.post("/v1/templates", json=GATED, headers=admin)
    assert r.status_code == 201, r.text


def _assign(client: Any, keys: dict[str, dict[str, str]], key: str) -> dict[str, Any]:
    r = client.post(
        "/v1/assign", json={"unit_id": "u-1", "experiments": [key]}, headers=keys["sdk"]
    )
    assert r.status_code == 200, r.text
    return dict(r.json()["assignments"][0])


def test_an_editor_cannot_lower_or_replace_the_default_template_to_start_unapproved(
    client, admin, editor, keys, bodies, gated
):
    r = client.post("/v1/experiments", json=bodies.experiment("escape"), headers=editor)
    assert r.status_code == 201, r.text
    assert (r.json()["template"], r.json()["template_version"]) == ("gated-default", 1)
    assert client.post("/v1/experiments/escape/start", headers=editor).status_code == 409

    # 1. Lower the rule in place: a new version without the approval.
    lowered = {"name": "Approval before start", "rules": {"approval_required": False}}
    r = client.put("/v1/templates/gated-default", json=lowered, headers=editor)
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    # 2. Bring a lenient template, or make it the default.
    for body in (LENIENT, LENIENT | {"is_default": True}):
        assert client.post("/v1/templates", json=body, headers=editor).status_code == 403
    assert client.get("/v1/templates/lenient", headers=editor).status_code == 404
    # 3. Drop or swap the template of the experiment.
    for patch in ({"template": None}, {"template": "lenient"}):
        r = client.patch("/v1/experiments/escape", json=patch, headers=editor)
        assert r.status_code == 422, r.text
    # 4. Approve it themselves.
    r = client.post("/v1/experiments/escape/approve", headers=editor)
    assert r.status_code == 403 and r.json()["code"] == "self_approval"

    r = client.post("/v1/experiments/escape/start", headers=editor)
    assert r.status_code == 409 and r.json()["code"] == "approval_required"
    exp = client.get("/v1/experiments/escape", headers=editor).json()
    assert (exp["status"], exp["template_version"], exp["approved_by"]) == ("draft", 1, None)
    tpl = client.get("/v1/templates/gated-default", headers=editor).json()
    assert tpl["latest_version"] == 1 and tpl["rules"]["approval_required"] is True
    assert _assign(client, keys, "escape")["variant"] == "control"


def test_only_a_template_an_admin_wrote_can_be_named(
    client, admin, editor, keys, bodies, gated, engine
):
    from service.db import open_session
    from service.deps import Principal
    from service.keys.models import Role
    from service.templates import service
    from service.templates.models import TemplateCreate, TemplateUpdate

    editor_id = next(
        k["id"]
        for k in client.get("/v1/keys", headers=admin).json()["items"]
        if k["role"] == "editor"
    )
    written_by_editor = Principal(key_id=editor_id, name="test-editor", role=Role.editor)
    # Written by editors before templates became admin-only: a lenient template, and a lenient
    # version 2 of a template an admin wrote.
    with open_session(write=True) as session:
        service.create_template(session, TemplateCreate.model_validate(LENIENT), written_by_editor)
    quick = {"key": "quick", "name": "Quick", "rules": {"approval_required": False}}
    assert client.post("/v1/templates", json=quick, headers=admin).status_code == 201
    strict = {"key": "strict", "name": "Strict", "rules": {"approval_required": True}}
    assert client.post("/v1/templates", json=strict, headers=admin).status_code == 201
    with open_session(write=True) as session:
        service.update_template(
            session, "strict", TemplateUpdate(name="Strict", rules={}), written_by_editor
        )

    for name in ("lenient", "strict"):
        r = client.post(
            "/v1/experiments", json=bodies.experiment(f"via-{name}", template=name), headers=editor
        )
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == "template"
        assert "not written by an admin" in r.json()["errors"][0]["message"]
        assert client.get(f"/v1/experiments/via-{name}", headers=editor).status_code == 404
    # A template an admin wrote is the organisation's choice, lenient or not.
    r = client.post(
        "/v1/experiments", json=bodies.experiment("via-quick", template="quick"), headers=editor
    )
    assert r.status_code == 201 and r.json()["template"] == "quick"
    assert client.post("/v1/experiments/via-quick/start", headers=editor).status_code == 200


def test_a_new_phase_under_an_approval_template_waits_for_a_fresh_approval(
    client, admin, editor, other_editor, keys, bodies, gated, engine
):
    third = _key(engine, "third-editor")
    assert client.post("/v1/experiments", json=bodies.experiment("phased"), headers=editor)
    assert client.post("/v1/experiments/phased/approve", headers=other_editor).status_code == 200
    assert client.post("/v1/experiments/phased/start", headers=editor).status_code == 200
    assert _assign(client, keys, "phased")["reason"] == "split"

    r = client.post("/v1/experiments/phased/phases", json=NEW_VARIANTS, headers=editor)
    assert r.status_code == 201, r.text
    exp = r.json()
    assert (exp["status"], exp["phase"], exp["approved_by"]) == ("paused", 2, None)
    assert exp["phases"][-1]["started_at"] is None
    # Nothing of the unreviewed phase runs: the paused experiment answers its control.
    assert _assign(client, keys, "phased") == {
        "experiment": "phased",
        "variant": "control",
        "in_experiment": False,
        "reason": "not_running",
    }
    r = client.post("/v1/experiments/phased/resume", headers=editor)
    assert r.status_code == 409 and r.json()["code"] == "approval_required"
    # The creator cannot approve the phase, nor can a second phase slip in before the approval.
    r = client.post("/v1/experiments/phased/approve", headers=editor)
    assert r.status_code == 403 and r.json()["code"] == "self_approval"
    r = client.post("/v1/experiments/phased/phases", json=NEW_VARIANTS, headers=other_editor)
    assert r.status_code == 201 and r.json()["phase"] == 3
    # ... and the author of that phase cannot approve it either.
    r = client.post("/v1/experiments/phased/approve", headers=other_editor)
    assert r.status_code == 403 and r.json()["code"] == "self_approval"
    assert client.post("/v1/experiments/phased/resume", headers=editor).status_code == 409

    r = client.post("/v1/experiments/phased/approve", json={"note": "bold is fine"}, headers=third)
    assert r.status_code == 200, r.text
    assert r.json()["approved_by"].startswith("third-editor (key ")
    r = client.post("/v1/experiments/phased/resume", headers=editor)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "running"
    assert r.json()["phases"][-1]["started_at"] is not None
    assert _assign(client, keys, "phased")["reason"] == "split"
    trail = [
        (e["action"], e["from_status"], e["to_status"], (e.get("details") or {}).get("phase"))
        for e in client.get("/v1/experiments/phased/audit", headers=editor).json()["items"]
    ]
    assert ("new_phase", "running", "paused", 2) in trail
    assert ("approve", None, None, 3) in trail
    assert trail[-1][:3] == ("resume", "paused", "running")
    # A paused phase that was approved is not approved twice.
    assert client.post("/v1/experiments/phased/approve", headers=third).status_code == 409


def test_a_new_phase_under_a_template_without_approval_runs_at_once(
    client, admin, editor, make_metric, bodies
):
    make_metric("conversion")
    plain = {"key": "plain", "name": "Plain", "is_default": True, "rules": {}}
    assert client.post("/v1/templates", json=plain, headers=admin).status_code == 201
    assert client.post("/v1/experiments", json=bodies.experiment("free"), headers=editor)
    assert client.post("/v1/experiments/free/start", headers=editor).status_code == 200
    r = client.post("/v1/experiments/free/phases", json=NEW_VARIANTS, headers=editor)
    assert r.status_code == 201
    assert r.json()["status"] == "running" and r.json()["phases"][-1]["started_at"] is not None
