"""Issue 17: one 422 names every problem of a protocol (field rules, cross-field rules, template
rules and unknown names together), each with its real cause and what to do; a protocol without a
baseline says why its sample size is null; `conclude`'s body is documented."""

from typing import Any

WEIGHTS_1_2 = [
    {"key": "control", "weight": 0.6, "is_control": True},
    {"key": "treatment", "weight": 0.6},
]


def _errors(r: Any) -> dict[str, str]:
    assert r.status_code == 422, r.text
    return {e["field"]: e["message"] for e in r.json()["errors"]}


def test_the_three_errors_body_gets_three_errors(client, admin, bodies):
    body = bodies.experiment(
        variants=WEIGHTS_1_2, primary_metric={"metric": "no-such-metric", "mde": 0}
    )
    r = client.post("/v1/experiments", json=body, headers=admin)
    errors = _errors(r)
    assert set(errors) == {"variants", "primary_metric.metric", "primary_metric.mde"}, errors
    assert "sum to 1.2" in errors["variants"]
    assert "no metric 'no-such-metric'" in errors["primary_metric.metric"]
    assert "POST /v1/metrics" in errors["primary_metric.metric"]
    assert "[0.0001, 10]" in errors["primary_metric.mde"]
    assert all(f in r.json()["detail"] for f in errors)


def test_unknown_layer_template_and_guardrail_come_with_the_field_errors(client, admin, bodies):
    body = bodies.experiment(
        layer="no-such-layer",
        template="no-such-template",
        guardrails=[{"metric": "ghost", "margin": 0.01}],
        alpha=0.7,
    )
    errors = _errors(client.post("/v1/experiments", json=body, headers=admin))
    assert {"layer", "template", "guardrails.0.metric", "alpha", "primary_metric.metric"} <= set(
        errors
    ), errors
    assert "POST /v1/layers" in errors["layer"]
    assert "GET /v1/templates" in errors["template"]


def test_a_valid_body_reports_template_rules_and_protocol_rules_together(
    client, admin, bodies, make_metric
):
    make_metric("conversion")
    make_metric("errors")
    r = client.post(
        "/v1/templates",
        json={
            "key": "strict",
            "name": "Strict",
            "rules": {"required_guardrails": [{"metric": "errors", "max_margin": 0.02}]},
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    body = bodies.experiment(template="strict", variants=WEIGHTS_1_2, layer="nope")
    errors = _errors(client.post("/v1/experiments", json=body, headers=admin))
    assert {"guardrails", "variants", "layer"} <= set(errors), errors
    assert errors["guardrails"].startswith("template.required_guardrail")


def test_a_missing_metric_is_blamed_not_the_expected_daily_units(
    client, admin, bodies, make_metric
):
    # docs/ops.md as first written: a template with a minimum duration, an experiment whose
    # primary metric was never created.
    make_metric("conversion")
    r = client.post(
        "/v1/templates",
        json={"key": "ops", "name": "Ops", "rules": {"minimum_duration_days": 14}},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    body = bodies.experiment(
        template="ops",
        primary_metric={"metric": "checkout_conversion", "mde": 0.05},
        expected_daily_units=5000.0,
    )
    errors = _errors(client.post("/v1/experiments", json=body, headers=admin))
    assert set(errors) == {"primary_metric.metric"}, errors
    # And a missing baseline is named as the baseline, not as the daily units.
    body = bodies.experiment(template="ops", expected_daily_units=5000.0)
    del body["baseline"]
    errors = _errors(client.post("/v1/experiments", json=body, headers=admin))
    assert set(errors) == {"baseline"}, errors
    assert "minimum_duration" in errors["baseline"]


def test_templates_refuse_rules_that_name_metrics_never_created(client, admin, make_metric):
    make_metric("conversion")
    template = {
        "key": "standard",
        "name": "Standard",
        "rules": {
            "required_guardrails": [{"metric": "error_rate", "max_margin": 0.02}],
            "allowed_primary_metrics": ["conversion", "revenue"],
        },
    }
    errors = _errors(client.post("/v1/templates", json=template, headers=admin))
    assert set(errors) == {
        "rules.required_guardrails.0.metric",
        "rules.allowed_primary_metrics.1",
    }, errors
    assert "no metric 'error_rate'" in errors["rules.required_guardrails.0.metric"]
    assert client.get("/v1/templates/standard", headers=admin).status_code == 404
    make_metric("error_rate")
    make_metric("revenue", "mean")
    assert client.post("/v1/templates", json=template, headers=admin).status_code == 201
    update = {"name": "Standard", "rules": {"allowed_primary_metrics": ["ghost"]}}
    errors = _errors(client.put("/v1/templates/standard", json=update, headers=admin))
    assert set(errors) == {"rules.allowed_primary_metrics.0"}
    assert client.get("/v1/templates/standard", headers=admin).json()["version"] == 1


def test_an_update_reports_its_field_errors_with_the_cross_field_ones(
    client, admin, make_experiment
):
    make_experiment("patch-me")
    r = client.patch(
        "/v1/experiments/patch-me",
        json={"variants": WEIGHTS_1_2, "secondary_metrics": ["ghost"], "alpha": 0.9},
        headers=admin,
    )
    errors = _errors(r)
    assert {"variants", "secondary_metrics.0", "alpha"} <= set(errors), errors
    # Valid alone, broken with what is stored: named by field, not as one `body` error.
    r = client.patch(
        "/v1/experiments/patch-me",
        json={"guardrails": [{"metric": "conversion", "margin": 0.1}], "layer": "nope"},
        headers=admin,
    )
    errors = _errors(r)
    assert {"guardrails", "layer"} <= set(errors), errors


def test_an_experiment_without_baseline_says_why_its_sample_size_is_null(
    client, admin, bodies, make_metric
):
    make_metric("conversion")
    body = bodies.experiment("no-baseline")
    del body["baseline"]
    r = client.post("/v1/experiments", json=body, headers=admin)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["sample_size_per_variant"] is None
    assert [w["code"] for w in created["warnings"]] == ["no_baseline"]
    assert "sample_size_per_variant" in created["warnings"][0]["message"]
    r = client.patch("/v1/experiments/no-baseline", json={"baseline": {"rate": 0.1}}, headers=admin)
    assert r.json()["sample_size_per_variant"] > 0
    assert [w["code"] for w in r.json()["warnings"]] == ["no_expected_daily_units"]
    r = client.patch(
        "/v1/experiments/no-baseline", json={"expected_daily_units": 1000.0}, headers=admin
    )
    assert r.json()["warnings"] == [] and r.json()["planned_duration_days"] >= 7


def test_conclude_documents_its_body_with_examples(app):
    op = app.openapi()["paths"]["/v1/experiments/{key}/conclude"]["post"]
    content = op["requestBody"]["content"]["application/json"]
    assert content["schema"]["$ref"].endswith("/ConcludeIn")
    assert content["examples"]
    schema = app.openapi()["components"]["schemas"]["ConcludeIn"]
    assert {e["decision"] for e in schema["examples"]} == {"ship", "inconclusive"}
    assert schema["required"] == ["decision", "rationale"]
    assert all(schema["properties"][f].get("description") for f in schema["properties"])
    assert "variant" in op["description"]


def test_a_phase_reports_bad_weights_with_its_field_errors(client, admin, make_experiment):
    make_experiment("phased", start=True)
    r = client.post(
        "/v1/experiments/phased/phases",
        json={"variants": WEIGHTS_1_2, "reason": ""},
        headers=admin,
    )
    errors = _errors(r)
    assert {"variants", "reason"} <= set(errors), errors
    assert "sum to 1.2" in errors["variants"]


def test_conclude_reports_an_unknown_variant_with_its_field_errors(client, admin, make_experiment):
    make_experiment("concluded", start=True)
    assert client.post("/v1/experiments/concluded/stop", headers=admin).status_code == 200
    r = client.post(
        "/v1/experiments/concluded/conclude",
        json={"decision": "ship", "variant": "purple", "rationale": " "},
        headers=admin,
    )
    errors = _errors(r)
    assert {"variant", "rationale"} <= set(errors), errors
    assert "'purple' is not a variant" in errors["variant"]
    r = client.post(
        "/v1/experiments/concluded/conclude",
        json={"decision": "ship", "variant": "purple", "rationale": "it won"},
        headers=admin,
    )
    assert set(_errors(r)) == {"variant"}
    r = client.post(
        "/v1/experiments/concluded/conclude",
        json={"decision": "ship", "variant": "treatment", "rationale": "it won"},
        headers=admin,
    )
    assert r.status_code == 200, r.text


def test_a_plan_the_engine_refuses_comes_with_the_template_rules(
    client, admin, bodies, make_metric
):
    make_metric("conversion")
    make_metric("errors")
    rules = {
        "minimum_duration_days": 14,
        "required_guardrails": [{"metric": "errors", "max_margin": 0.02}],
    }
    r = client.post(
        "/v1/templates", json={"key": "ops", "name": "Ops", "rules": rules}, headers=admin
    )
    assert r.status_code == 201, r.text
    body = bodies.experiment(
        template="ops",
        primary_metric={"metric": "conversion", "mde": 1e-4},
        baseline={"rate": 1e-6},
        expected_daily_units=5000.0,
    )
    errors = _errors(client.post("/v1/experiments", json=body, headers=admin))
    assert set(errors) == {"guardrails", "primary_metric.mde"}, errors
    assert "units per variant" in errors["primary_metric.mde"]
