"""Assignment: the shared vectors, the evaluation order, traffic ramps, and never raising."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sdk_helpers import make_config, make_experiment
from trialbook.assignment import (
    Assignment,
    Reason,
    compile_config,
    evaluate,
    serve_config,
    validate_config,
)
from trialbook.hashing import SALT_TRAFFIC, SALT_VARIANT, override_hash, unit_float


def test_every_vector_is_reproduced(vectors: dict[str, Any]) -> None:
    cases = vectors["cases"]
    assert len(cases) >= 300
    assert {c["expected"]["reason"] for c in cases} >= {
        "split",
        "override",
        "not_targeted",
        "traffic_excluded",
        "layer_excluded",
        "holdout",
        "not_running",
        "unknown_experiment",
        "error",
    }
    for case in cases:
        result = evaluate(case["config"], case["experiment"], case["unit_id"], case["attributes"])
        got = {
            "variant": result.variant,
            "in_experiment": result.in_experiment,
            "reason": result.reason.value,
        }
        assert got == case["expected"], case["name"]


def test_every_served_vector_is_reproduced(vectors: dict[str, Any]) -> None:
    served_only = 0
    for case in vectors["cases"]:
        served = case["served"]
        assert served["config_version"] == 2
        assert validate_config(served) == [] or case["expected"]["reason"] == "error"
        result = evaluate(served, case["experiment"], case["unit_id"], case["attributes"])
        got = {
            "variant": result.variant,
            "in_experiment": result.in_experiment,
            "reason": result.reason.value,
        }
        assert got == case.get("served_expected", case["expected"]), case["name"]
        served_only += "served_expected" in case
    assert served_only == 6  # the draft and archived status cases: not served


def test_serve_config_gives_the_independent_served_form(vectors: dict[str, Any]) -> None:
    # The generator hashes with hashlib directly; the SDK's serve_config must agree byte for byte.
    for case in vectors["cases"]:
        if case["expected"]["reason"] == "error":
            continue
        assert serve_config(case["config"]) == case["served"], case["name"]
        assert serve_config(case["served"]) == case["served"], case["name"]  # idempotent


def test_a_served_config_holds_no_override_unit_id_nor_list_value_in_clear() -> None:
    exp = make_experiment(
        overrides={"qa@example.com": "treatment"},
        targeting={
            "all": [
                {"attribute": "email", "op": "in", "value": ["vip@example.com", "ceo@example.com"]},
                {"attribute": "plan", "op": "neq", "value": "free-trial-plan"},
                {"attribute": "app", "op": "semver_gte", "value": "2.0.0"},
            ]
        },
    )
    served = serve_config(make_config(exp))
    text = json.dumps(served)
    for secret in ("qa@example.com", "vip@example.com", "ceo@example.com", "free-trial-plan"):
        assert secret not in text
    assert "2.0.0" in text  # ordered comparisons stay in clear
    compiled = compile_config(served)
    assert compiled.errors == []
    forced = compiled.evaluate("exp", "qa@example.com")
    assert (forced.variant, forced.reason) == ("treatment", Reason.OVERRIDE)
    attrs = {"email": "vip@example.com", "plan": "pro", "app": "2.1.0"}
    assert compiled.evaluate("exp", "u1", attrs).reason is Reason.SPLIT
    for change in ({"email": "other@example.com"}, {"plan": "free-trial-plan"}, {"app": "1.0"}):
        assert compiled.evaluate("exp", "u1", attrs | change).reason is Reason.NOT_TARGETED


def test_served_overrides_follow_the_phase_and_work_while_paused() -> None:
    exp = make_experiment(status="paused", phase=3, override_hashes={})
    exp["override_hashes"] = {override_hash(exp["seed"], 3, "qa"): "treatment"}
    compiled = compile_config(make_config(exp))
    assert compiled.errors == []
    assert compiled.evaluate("exp", "qa").reason is Reason.OVERRIDE
    assert compiled.evaluate("exp", "other").reason is Reason.NOT_RUNNING
    exp["phase"] = 4  # an old phase's hash names nobody
    assert compile_config(make_config(exp)).evaluate("exp", "qa").reason is Reason.NOT_RUNNING
    # Not running: the targeting is withheld, the overrides kept.
    served = serve_config(make_config(make_experiment(status="stopped", overrides={"q": "b"})))
    assert served["experiments"]["exp"]["targeting"] is None


def test_config_versions_other_than_1_and_2_make_every_experiment_an_error() -> None:
    for version in (0, 3, "2", True):
        config = make_config(make_experiment()) | {"config_version": version}
        assert any(e.startswith("$.config_version") for e in validate_config(config))
        assert compile_config(config).evaluate("exp", "u").reason is Reason.ERROR


def test_malformed_override_hashes_are_named() -> None:
    exp = make_experiment(override_hashes={"ABC": "treatment", "a" * 64: "nope"})
    errors = validate_config(make_config(exp))
    assert any("override_hashes['ABC']: expected 64 lowercase hex" in e for e in errors)
    assert any("'nope' is not a variant" in e for e in errors)


def test_vectors_document_their_schema(vectors: dict[str, Any]) -> None:
    doc = vectors["_doc"]
    assert "tb1:" in doc["experiment_hash_data"] and "layer" in doc["layer_hash_data"]
    assert vectors["hash_version"] == 1


def test_the_brief_example_config_is_valid_and_assigns(base_config: dict[str, Any]) -> None:
    compiled = compile_config(base_config)
    assert compiled.errors == []
    result = compiled.evaluate("new-checkout", "user-1")
    assert result.reason is Reason.SPLIT and result.in_experiment
    assert result.variant in ("control", "treatment")
    assert result.phase == 1
    assert json.loads(json.dumps(result.to_dict())) == {
        "experiment": "new-checkout",
        "variant": result.variant,
        "in_experiment": True,
        "reason": "split",
    }


def test_overrides_win_even_over_a_paused_experiment_and_are_not_in_the_experiment() -> None:
    exp = make_experiment(status="paused", overrides={"qa": "treatment"})
    compiled = compile_config(make_config(exp))
    assert compiled.evaluate("exp", "qa") == Assignment(
        "exp", "treatment", False, Reason.OVERRIDE, 1
    )
    assert compiled.evaluate("exp", "other") == Assignment(
        "exp", "control", False, Reason.NOT_RUNNING, 1
    )


def test_order_targeting_before_layer_before_traffic() -> None:
    tree = {"attribute": "country", "op": "eq", "value": "FR"}
    exp = make_experiment(
        targeting=tree, layer="checkout", layer_range=[0.5, 1.0], traffic_fraction=0.5
    )
    compiled = compile_config(make_config(exp))
    units = [f"u{i}" for i in range(4000)]
    reasons = {compiled.evaluate("exp", u, {"country": "FR"}).reason for u in units}
    assert reasons == {Reason.HOLDOUT, Reason.LAYER_EXCLUDED, Reason.TRAFFIC_EXCLUDED, Reason.SPLIT}
    # Targeting is evaluated first: a non-French unit is never hashed into the other reasons.
    assert {compiled.evaluate("exp", u, {"country": "DE"}).reason for u in units} == {
        Reason.NOT_TARGETED
    }
    for unit in units:
        result = compiled.evaluate("exp", unit, {"country": "FR"})
        if result.reason is not Reason.SPLIT:
            assert result.variant == "control" and not result.in_experiment


def test_raising_traffic_keeps_every_unit_that_was_in_in_the_same_variant() -> None:
    low = compile_config(make_config(make_experiment(traffic_fraction=0.2)))
    high = compile_config(make_config(make_experiment(traffic_fraction=0.5)))
    was_in = 0
    for i in range(20_000):
        unit = f"user-{i}"
        before = low.evaluate("exp", unit)
        after = high.evaluate("exp", unit)
        if before.in_experiment:
            was_in += 1
            assert after.in_experiment and after.variant == before.variant
    assert 3600 < was_in < 4400  # ~20 % of 20,000


def test_split_uses_the_variant_hash_and_cumulative_weights() -> None:
    exp = make_experiment(
        variants=[
            {"key": "a", "weight": 0.1, "is_control": True},
            {"key": "b", "weight": 0.3, "is_control": False},
            {"key": "c", "weight": 0.6, "is_control": False},
        ],
        traffic_fraction=0.37,
    )
    compiled = compile_config(make_config(exp))
    for i in range(2000):
        unit = f"w{i}"
        traffic = unit_float("a1b2c3d4", 1, SALT_TRAFFIC, unit)
        x = unit_float("a1b2c3d4", 1, SALT_VARIANT, unit)
        result = compiled.evaluate("exp", unit)
        if traffic >= 0.37:
            assert result.reason is Reason.TRAFFIC_EXCLUDED
        else:
            assert result.variant == ("a" if x < 0.1 else "b" if x < 0.4 else "c")


def test_a_new_phase_rerandomizes() -> None:
    one = compile_config(make_config(make_experiment(phase=1)))
    two = compile_config(make_config(make_experiment(phase=2)))
    changed = sum(
        one.evaluate("exp", f"u{i}").variant != two.evaluate("exp", f"u{i}").variant
        for i in range(2000)
    )
    assert 850 < changed < 1150  # independent 50/50 draws disagree half the time


def test_layer_slots_do_not_depend_on_the_phase() -> None:
    layered: dict[str, Any] = {"layer": "checkout", "layer_range": [0.05, 0.5]}
    one = compile_config(make_config(make_experiment(phase=1, **layered)))
    two = compile_config(make_config(make_experiment(phase=7, **layered)))
    for i in range(2000):
        a, b = one.evaluate("exp", f"u{i}"), two.evaluate("exp", f"u{i}")
        assert (a.reason is Reason.SPLIT) == (b.reason is Reason.SPLIT)


def test_unknown_experiment_gives_none() -> None:
    compiled = compile_config(make_config(make_experiment()))
    assert compiled.evaluate("nope", "u") == Assignment(
        "nope", None, False, Reason.UNKNOWN_EXPERIMENT, None
    )


def test_int_unit_ids_are_their_decimal_string() -> None:
    compiled = compile_config(make_config(make_experiment()))
    assert compiled.evaluate("exp", 12345) == compiled.evaluate("exp", "12345")  # type: ignore[arg-type]


def test_a_malformed_experiment_answers_error_with_the_control_and_others_still_work() -> None:
    bad = make_experiment("bad", traffic_fraction=2.0)
    good = make_experiment("good")
    compiled = compile_config(make_config(bad, good))
    assert compiled.evaluate("bad", "u") == Assignment("bad", "control", False, Reason.ERROR, 1)
    assert compiled.evaluate("good", "u").reason is Reason.SPLIT
    assert compiled.experiment_errors("bad") == [
        "$.experiments['bad'].traffic_fraction: expected a number in (0, 1]; got 2.0"
    ]


def test_an_unsupported_hash_version_makes_every_experiment_an_error() -> None:
    config = make_config(make_experiment())
    config["hash_version"] = 2
    compiled = compile_config(config)
    result = compiled.evaluate("exp", "u")
    assert result.reason is Reason.ERROR and result.variant == "control"


def test_validate_config_reports_paths_and_fixes() -> None:
    exp = make_experiment(
        variants=[
            {"key": "control", "weight": 0.5, "is_control": True},
            {"key": "control", "weight": -1, "is_control": True},
        ],
        layer="missing",
        overrides={"u": "ghost"},
        targeting={"attribute": "x", "op": "eq", "value": [1]},
    )
    errors = validate_config(make_config(exp))
    prefix = "$.experiments['exp']"
    assert errors == [
        f"{prefix}.variants[1].key: duplicate variant key 'control'",
        f"{prefix}.variants[1].weight: expected a number > 0; got -1",
        f"{prefix}.variants: expected exactly one is_control; found 2",
        f"{prefix}.targeting.value: 'eq' needs a string, number or boolean; got [1]",
        f"{prefix}.overrides['u']: 'ghost' is not a variant of 'exp'",
        f"{prefix}.layer: 'missing' is not a key of the config's layers",
    ]
    assert validate_config([]) == ["$: expected an object {hash_version, layers, experiments}"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(
        [
            "status",
            "seed",
            "phase",
            "variants",
            "traffic_fraction",
            "targeting",
            "overrides",
            "override_hashes",
            "layer",
            "layer_range",
        ]
    ),
    value=json_values,
    unit=st.one_of(st.text(max_size=10), st.integers(), st.none()),
    attributes=st.one_of(st.none(), st.dictionaries(st.text(max_size=3), json_values)),
)
def test_evaluation_never_raises_on_malformed_config(
    field: str, value: Any, unit: Any, attributes: Any
) -> None:
    config = make_config(make_experiment())
    config["experiments"]["exp"][field] = copy.deepcopy(value)
    result = compile_config(config).evaluate("exp", unit, attributes)
    assert isinstance(result, Assignment)
    assert result.variant in (None, "control", "treatment")
    if result.reason is Reason.ERROR:
        assert not result.in_experiment


@settings(max_examples=100, deadline=None)
@given(config=json_values)
def test_compile_never_raises_on_any_json(config: Any) -> None:
    result = compile_config(config).evaluate("exp", "u")
    assert result.reason in (Reason.UNKNOWN_EXPERIMENT, Reason.ERROR)
