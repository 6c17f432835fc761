"""Issue 12: every number of the protocol has a range the engine can compute, bounded nesting,
and row ids that agree with the 32-bit columns. On SQLite and PostgreSQL alike."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.experiments import models as em


def _create(client: Any, admin: dict[str, str], bodies: Any, **extra: Any) -> Any:
    return client.post(
        "/v1/experiments", json=bodies.experiment("limits-exp", **extra), headers=admin
    )


def _fields(r: Any) -> dict[str, str]:
    assert r.status_code == 422, r.text
    return {e["field"]: e["message"] for e in r.json()["errors"]}


@pytest.mark.parametrize(
    ("extra", "field", "bound"),
    [
        (
            {"primary_metric": {"metric": "conversion", "mde": 5e-324}},
            "primary_metric.mde",
            "0.0001",
        ),
        (
            {"primary_metric": {"metric": "conversion", "mde": 1e6}},
            "primary_metric.mde",
            "[0.0001, 10]",
        ),
        ({"baseline": {"rate": 1e-308}}, "baseline.rate", "[1e-06, 0.999999]"),
        ({"baseline": {"rate": 1 - 1e-12}}, "baseline.rate", "[1e-06, 0.999999]"),
        ({"expected_daily_units": 5e-324}, "expected_daily_units", "[1, 1e+10]"),
        ({"expected_daily_units": 1e300}, "expected_daily_units", "[1, 1e+10]"),
        ({"attribution_window_hours": 1e100}, "attribution_window_hours", "[0.01, 87600]"),
        ({"attribution_window_hours": 5e-324}, "attribution_window_hours", "[0.01, 87600]"),
        ({"alpha": 5e-324}, "alpha", "[1e-06, 0.5)"),
        ({"power": 1 - 1e-12}, "power", "[0.5, 0.9999]"),
        ({"traffic_fraction": 5e-324}, "traffic_fraction", "[0.0001, 1]"),
        (
            {
                "variants": [
                    {"key": "control", "weight": 1 - 5e-324, "is_control": True},
                    {"key": "treatment", "weight": 5e-324},
                ]
            },
            "variants.1.weight",
            "[0.0001, 1]",
        ),
        (
            {"guardrails": [{"metric": "conversion", "margin": 5e-324}]},
            "guardrails.0.margin",
            "0.0001",
        ),
        (
            {"analysis": {"prior_mean": 0.0, "prior_sd": 5e-324}},
            "analysis.prior_sd",
            "[0.0001, 100]",
        ),
        ({"analysis": {"prior_mean": 1e300, "prior_sd": 1.0}}, "analysis.prior_mean", "[-10, 10]"),
        ({"analysis": {"srm_threshold": 5e-324}}, "analysis.srm_threshold", "[1e-09, 0.5)"),
    ],
)
def test_create_refuses_protocol_numbers_outside_their_range(
    client, admin, bodies, make_metric, extra, field, bound
):
    make_metric("conversion")
    errors = _fields(_create(client, admin, bodies, **extra))
    assert field in errors, errors
    assert bound in errors[field], errors[field]
    assert client.get("/v1/experiments/limits-exp", headers=admin).status_code == 404


def test_a_mean_baseline_beyond_the_event_bound_is_refused(client, admin, bodies, make_metric):
    make_metric("revenue", "mean")
    errors = _fields(
        _create(
            client,
            admin,
            bodies,
            primary_metric={"metric": "revenue", "mde": 0.1},
            baseline={"mean": 1e300, "sd": 1e-300},
        )
    )
    assert "[-1e+12, 1e+12]" in errors["baseline.mean"]
    assert "[1e-09, 1e+12]" in errors["baseline.sd"]


def test_a_plan_beyond_any_real_experiment_is_a_422_not_a_500(client, admin, bodies, make_metric):
    make_metric("conversion")
    # Each number is in range; together they need ~1.6e15 units per variant.
    errors = _fields(
        _create(
            client,
            admin,
            bodies,
            primary_metric={"metric": "conversion", "mde": 1e-4},
            baseline={"rate": 1e-6},
        )
    )
    assert "units per variant" in errors["primary_metric.mde"]
    # In range again, but it takes centuries at one unit a day.
    errors = _fields(
        _create(client, admin, bodies, expected_daily_units=1.0, traffic_fraction=0.001)
    )
    assert "days" in errors["expected_daily_units"]


def test_an_attribution_window_of_1e100_hours_is_refused_and_results_keep_working(
    client, admin, bodies, make_metric
):
    make_metric("conversion")
    assert _fields(_create(client, admin, bodies, attribution_window_hours=1e100))
    r = _create(client, admin, bodies, attribution_window_hours=87_600.0)
    assert r.status_code == 201, r.text
    r = client.patch(
        "/v1/experiments/limits-exp", json={"attribution_window_hours": 1e100}, headers=admin
    )
    assert "attribution_window_hours" in _fields(r)
    assert client.post("/v1/experiments/limits-exp/start", headers=admin).status_code == 200
    r = client.get("/v1/experiments/limits-exp/results", headers=admin)
    assert r.status_code == 200, r.text


def _nested(depth: int) -> dict[str, Any]:
    tree: dict[str, Any] = {"attribute": "country", "op": "eq", "value": "FR"}
    for _ in range(depth):
        tree = {"all": [tree]}
    return tree


def test_targeting_nested_200_deep_is_a_422_naming_the_depth(client, admin, bodies, make_metric):
    make_metric("conversion")
    errors = _fields(_create(client, admin, bodies, targeting=_nested(200)))
    assert "targeting" in errors, errors
    assert str(em.MAX_TARGETING_DEPTH) in errors["targeting"]
    r = _create(client, admin, bodies, targeting=_nested(em.MAX_TARGETING_DEPTH))
    assert r.status_code == 201, r.text


def test_targeting_lists_are_bounded(client, admin, bodies, make_metric):
    make_metric("conversion")
    huge = {"attribute": "user_id", "op": "in", "value": [f"u{i}" for i in range(5000)]}
    errors = _fields(_create(client, admin, bodies, targeting=huge))
    assert "1000" in errors["targeting"]


@pytest.mark.parametrize(
    ("path", "body", "field", "bound"),
    [
        (
            "/v1/layers",
            {"key": "lay", "holdout_fraction": 0.99999},
            "holdout_fraction",
            "[0, 0.99]",
        ),
        (
            "/v1/metrics",
            {
                "key": "rev",
                "name": "Revenue",
                "type": "mean",
                "event": "e",
                "winsorize_upper": 1 - 1e-9,
            },
            "winsorize_upper",
            "[0.0001, 0.9999]",
        ),
        (
            "/v1/templates",
            {"key": "tpl", "name": "T", "defaults": {"attribution_window_hours": 1e100}},
            "defaults.attribution_window_hours",
            "[0.01, 87600]",
        ),
        (
            "/v1/templates",
            {"key": "tpl", "name": "T", "defaults": {"alpha": 5e-324}},
            "defaults.alpha",
            "[1e-06, 0.5)",
        ),
    ],
)
def test_layers_metrics_and_templates_refuse_numbers_outside_their_range(
    client, admin, path, body, field, bound
):
    errors = _fields(client.post(path, json=body, headers=admin))
    assert bound in errors[field], errors


def test_phases_refuse_a_traffic_fraction_outside_its_range(client, admin, make_experiment):
    make_experiment("limits-exp", start=True)
    r = client.post(
        "/v1/experiments/limits-exp/phases",
        json={"traffic_fraction": 5e-324, "reason": "ramp down"},
        headers=admin,
    )
    assert "[0.0001, 1]" in _fields(r)["traffic_fraction"]


def _schema_bounds(schema: dict[str, Any], component: str, prop: str) -> tuple[Any, Any]:
    node = schema["components"]["schemas"][component]["properties"][prop]
    for option in [node, *node.get("anyOf", [])]:
        if "minimum" in option or "maximum" in option or "exclusiveMaximum" in option:
            return option.get("minimum"), option.get("maximum", option.get("exclusiveMaximum"))
    raise AssertionError(f"{component}.{prop} has no bounds in the OpenAPI schema: {node}")


@pytest.mark.parametrize(
    ("component", "prop", "low", "high"),
    [
        ("PrimaryMetricIn", "mde", em.MIN_RELATIVE_EFFECT, em.MAX_RELATIVE_EFFECT),
        ("GuardrailIn", "margin", em.MIN_RELATIVE_EFFECT, em.MAX_RELATIVE_EFFECT),
        ("Baseline", "rate", em.MIN_RATE, 1 - em.MIN_RATE),
        ("Baseline", "mean", -em.MAX_ABS_MEAN, em.MAX_ABS_MEAN),
        ("Baseline", "sd", em.MIN_SD, em.MAX_ABS_MEAN),
        ("ExperimentCreate", "expected_daily_units", 1, em.MAX_DAILY_UNITS),
        ("ExperimentCreate", "attribution_window_hours", em.MIN_WINDOW_HOURS, em.MAX_WINDOW_HOURS),
        ("ExperimentCreate", "alpha", em.MIN_ALPHA, 0.5),
        ("ExperimentCreate", "power", 0.5, em.MAX_POWER),
        ("ExperimentCreate", "traffic_fraction", em.MIN_FRACTION, 1),
        ("VariantIn", "weight", em.MIN_FRACTION, 1),
        ("AnalysisSettings", "prior_sd", em.MIN_PRIOR_SD, em.MAX_PRIOR_SD),
        ("ExperimentUpdate", "attribution_window_hours", em.MIN_WINDOW_HOURS, em.MAX_WINDOW_HOURS),
        ("LayerCreate", "holdout_fraction", 0, em.MAX_HOLDOUT),
        ("TemplateDefaults", "attribution_window_hours", em.MIN_WINDOW_HOURS, em.MAX_WINDOW_HOURS),
        ("RequiredGuardrail", "max_margin", em.MIN_RELATIVE_EFFECT, em.MAX_RELATIVE_EFFECT),
    ],
)
def test_the_ranges_reach_the_openapi_schema(app, component, prop, low, high):
    assert _schema_bounds(app.openapi(), component, prop) == (low, high)


# --------------------------------------------------------------------- row ids vs 32-bit columns

ABOVE_INT32 = 2**31


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/webhooks/{id}"),
        ("PATCH", "/v1/webhooks/{id}"),
        ("DELETE", "/v1/webhooks/{id}"),
        ("GET", "/v1/webhooks/{id}/deliveries"),
        ("DELETE", "/v1/keys/{id}"),
        ("POST", "/v1/alerts/{id}/resolve"),
    ],
)
def test_row_ids_beyond_the_32_bit_columns_are_a_422_and_the_largest_a_404(
    client, admin, method, path
):
    body = {"description": "x"} if method == "PATCH" else None
    r = client.request(method, path.format(id=ABOVE_INT32), json=body, headers=admin)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] in ("webhook_id", "key_id", "alert_id")
    assert "2147483647" in r.json()["errors"][0]["message"]
    r = client.request(method, path.format(id=ABOVE_INT32 - 1), json=body, headers=admin)
    assert r.status_code == 404, r.text


def test_rows_stored_under_the_older_looser_ranges_still_read_and_analyse(
    client, admin, keys, engine, make_experiment
):
    from sqlmodel import Session, select

    from service.experiments.models import Experiment

    make_experiment("old-row", start=True)
    now = datetime.now(UTC)
    events = [
        {
            "event_id": f"x{i}",
            "type": "exposure",
            "experiment": "old-row",
            "variant": "control" if i % 2 else "treatment",
            "unit_id": f"u{i}",
            "timestamp": (now - timedelta(minutes=5)).isoformat(),
        }
        for i in range(20)
    ] + [
        {
            "event_id": f"c{i}",
            "type": "conversion",
            "name": "conversion",
            "unit_id": f"u{i}",
            "timestamp": now.isoformat(),
        }
        for i in range(0, 20, 3)
    ]
    r = client.post("/v1/events", json={"events": events}, headers=keys["sdk"])
    assert r.status_code == 200 and r.json()["accepted"] == len(events), r.text
    with Session(engine) as session:
        row = session.exec(select(Experiment).where(Experiment.key == "old-row")).one()
        row.attribution_window_hours = 1e100
        row.primary_mde = 1e-200
        row.alpha = 1e-300
        row.analysis = row.analysis | {"prior_mean": 0.0, "prior_sd": 1e-300}
        session.add(row)
        session.commit()
    r = client.get("/v1/experiments/old-row", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["attribution_window_hours"] == 1e100
    for path in ("/v1/experiments/old-row/results", "/v1/experiments/old-row/report?format=md"):
        r = client.get(path, headers=admin)
        assert r.status_code == 200, (path, r.text)


def test_a_snapshot_id_beyond_the_32_bit_column_is_a_422_and_the_largest_a_404(
    client, admin, make_experiment
):
    # Found by schemathesis on PostgreSQL: ?snapshot=9223372036854775807 reached the query and
    # failed there ("integer out of range"), a 500.
    key = make_experiment()["key"]
    for huge in (ABOVE_INT32, 2**63 - 1):
        r = client.get(f"/v1/experiments/{key}/results", params={"snapshot": huge}, headers=admin)
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == "snapshot"
        assert "2147483647" in r.json()["errors"][0]["message"]
    r = client.get(
        f"/v1/experiments/{key}/results", params={"snapshot": ABOVE_INT32 - 1}, headers=admin
    )
    assert r.status_code == 404, r.text
