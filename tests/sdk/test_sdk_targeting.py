"""Targeting: operators, missing attributes, type mismatches, semver, validation messages."""

from __future__ import annotations

from typing import Any

import pytest
from trialbook.targeting import (
    OPS,
    compile_condition,
    evaluate_condition,
    parse_semver,
    validate_condition,
)


def leaf(op: str, value: Any, attribute: str = "a") -> dict[str, Any]:
    return {"attribute": attribute, "op": op, "value": value}


@pytest.mark.parametrize(
    ("op", "value", "attrs", "expected"),
    [
        ("eq", "x", {"a": "x"}, True),
        ("eq", 1, {"a": True}, False),  # bool is not a number
        ("eq", 1.5, {"a": 1.5}, True),
        ("neq", "x", {"a": None}, True),  # None counts as missing
        ("neq", "x", {"a": ["x"]}, False),  # a list is a type mismatch
        ("in", ["x", "y"], {"a": "y"}, True),
        ("in", [True], {"a": 1}, False),
        ("in", ["x"], {"a": {"unhashable": 1}}, False),
        ("not_in", [1, 2], {"a": 3}, True),
        ("not_in", [1, 2], {"a": 2.0}, False),
        ("not_in", [], {"a": "anything"}, True),
        ("gt", 1, {"a": float("nan")}, False),
        ("lte", 0, {"a": -1}, True),
        ("semver_gt", "1.2.3", {"a": "v1.10.0"}, True),
        ("semver_eq", "1.0.0", {"a": "1.0.0+build.1"}, True),
        ("semver_lt", "1.0.0-alpha.beta", {"a": "1.0.0-alpha.1"}, True),
    ],
)
def test_leaf_truth(op: str, value: Any, attrs: dict[str, Any], expected: bool) -> None:
    assert validate_condition(leaf(op, value)) == []
    assert compile_condition(leaf(op, value))(attrs) is expected


def test_a_missing_attribute_is_false_except_for_neq_and_not_in() -> None:
    values = {"in": ["x"], "not_in": ["x"], "gt": 1, "gte": 1, "lt": 1, "lte": 1}
    for op in OPS:
        value = values.get(op, "1.0.0" if op.startswith("semver") else "x")
        expected = op in ("neq", "not_in")
        assert compile_condition(leaf(op, value))({}) is expected, op
        assert compile_condition(leaf(op, value))(None) is expected, op


def test_semver_precedence_follows_semver_2_section_11() -> None:
    # The ordered list printed in SemVer 2.0.0 §11.4 example.
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "2.0.0",
        "2.1.0",
        "2.1.1",
        "2.10.0",
    ]
    keys = [parse_semver(v) for v in ordered]
    assert all(k is not None for k in keys)
    assert keys == sorted(keys)  # type: ignore[type-var]
    assert len(set(keys)) == len(keys)
    assert parse_semver("1.2") == parse_semver("1.2.0")
    assert parse_semver("nope") is None
    assert parse_semver("1..2") is None


def test_groups_nest_and_empty_groups_have_the_neutral_value() -> None:
    tree = {
        "any": [{"all": [leaf("eq", "FR", "c"), leaf("gte", 18, "age")]}, leaf("eq", True, "qa")]
    }
    predicate = compile_condition(tree)
    assert predicate({"c": "FR", "age": 18})
    assert not predicate({"c": "FR", "age": 17})
    assert predicate({"qa": True})
    assert compile_condition({"all": []})({}) is True
    assert compile_condition({"any": []})({}) is False


def test_validator_names_the_path_of_each_bad_node_and_the_fix() -> None:
    tree = {
        "all": [
            leaf("eq", "FR"),
            {"any": [leaf("contains", "x"), leaf("gt", "10")]},
            {"attribute": "a", "op": "in"},
            leaf("semver_gt", "latest"),
            leaf("in", ["a", 1]),
            "nonsense",
        ]
    }
    errors = validate_condition(tree, "$.targeting")
    assert errors == [
        "$.targeting.all[1].any[0].op: unknown op 'contains'; use one of " + ", ".join(OPS),
        "$.targeting.all[1].any[1].value: 'gt' needs a finite number; got '10'",
        "$.targeting.all[2]: missing ['value']; a leaf is {attribute, op, value}",
        "$.targeting.all[3].value: 'semver_gt' needs a version string like '2.10.0'; got 'latest'",
        "$.targeting.all[4].value: 'in' list mixes ['num', 'str']; use one type",
        "$.targeting.all[5]: expected an object ({'all': [...]}, {'any': [...]} or a leaf)",
    ]
    assert validate_condition({"all": [], "any": []})[0].startswith(
        "$: a group has exactly one key"
    )
    assert validate_condition({"all": "x"}) == ["$.all: expected a list of conditions"]
    assert validate_condition(None) == []


def test_compile_refuses_an_invalid_tree_and_evaluate_returns_false() -> None:
    with pytest.raises(ValueError, match="unknown op"):
        compile_condition(leaf("like", "x"))
    assert evaluate_condition(leaf("like", "x"), {"a": "x"}) is False
    assert evaluate_condition(leaf("eq", "x"), {"a": "x"}) is True


def test_a_hostile_attribute_never_raises() -> None:
    class Weird(str):
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("boom")

        __hash__ = str.__hash__

    assert compile_condition(leaf("eq", "x"))({"a": Weird("x")}) is False
