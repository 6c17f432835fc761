"""Targeting: operators, missing attributes, type mismatches, semver, validation messages."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trialbook.targeting import (
    OPS,
    compile_condition,
    evaluate_condition,
    hash_condition,
    parse_semver,
    validate_condition,
)

LEAF_TRUTH = [
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
]


def leaf(op: str, value: Any, attribute: str = "a") -> dict[str, Any]:
    return {"attribute": attribute, "op": op, "value": value}


@pytest.mark.parametrize(("op", "value", "attrs", "expected"), LEAF_TRUTH)
def test_leaf_truth(op: str, value: Any, attrs: dict[str, Any], expected: bool) -> None:
    assert validate_condition(leaf(op, value)) == []
    assert compile_condition(leaf(op, value))(attrs) is expected


@pytest.mark.parametrize(("op", "value", "attrs", "expected"), LEAF_TRUTH)
def test_a_hashed_leaf_answers_like_the_plain_one(
    op: str, value: Any, attrs: dict[str, Any], expected: bool
) -> None:
    hashed = hash_condition(leaf(op, value), "seed")
    assert validate_condition(hashed) == []
    predicate = compile_condition(hashed, "seed")
    assert predicate(attrs) is expected
    assert predicate(attrs) is expected  # the second answer comes from the leaf's memo
    assert compile_condition(hashed, "seed")({}) is (op in ("neq", "not_in"))


def test_hashed_leaves_hide_the_values_and_compare_by_type() -> None:
    hashed = hash_condition(leaf("in", ["vip@example.com", "x"]), "s1")
    assert hashed == {
        "attribute": "a",
        "op": "in",
        "kind": "str",
        "sha256": sorted(
            hashlib.sha256(b"tb1:s1:value:s:" + v.encode()).hexdigest()
            for v in ("vip@example.com", "x")
        ),
    }
    number = compile_condition(hash_condition(leaf("eq", 1), "s1"), "s1")
    # 1, then True (a bool, same Python hash as 1): the memo must not mix them up.
    assert (number({"a": 1}), number({"a": True}), number({"a": 1.0})) == (True, False, True)
    flag = compile_condition(hash_condition(leaf("neq", True), "s1"), "s1")
    assert (flag({"a": True}), flag({"a": 1}), flag({"a": False})) == (False, False, True)
    text = compile_condition(hash_condition(leaf("not_in", ["1"]), "s1"), "s1")
    assert (text({"a": 1}), text({"a": "1"}), text({"a": "2"})) == (False, False, True)
    # A lone surrogate cannot be hashed: the hashed leaf is false.
    assert compile_condition(hash_condition(leaf("neq", "x"), "s1"), "s1")({"a": "\ud800"}) is False
    # Another salt gives other hashes: the tree only matches under its own experiment's seed.
    assert compile_condition(hash_condition(leaf("eq", "x"), "s1"), "s2")({"a": "x"}) is False
    with pytest.raises(ValueError, match="salt"):
        compile_condition(hash_condition(leaf("eq", "x"), "s1"))
    assert evaluate_condition(hash_condition(leaf("eq", "x"), "s1"), {"a": "x"}) is False
    assert evaluate_condition(hash_condition(leaf("eq", "x"), "s1"), {"a": "x"}, "s1") is True


def test_a_hashed_leaf_memo_stays_bounded_and_correct() -> None:
    predicate = compile_condition(hash_condition(leaf("in", ["u-7"]), "s"), "s")
    answers = [predicate({"a": f"u-{i}"}) for i in range(10_000)]
    assert [i for i, hit in enumerate(answers) if hit] == [7]
    assert predicate({"a": "u-7"}) is True


def test_hashed_leaves_are_validated() -> None:
    good = "a" * 64
    cases = {
        "$.sha256: expected a list of 64 lowercase hex digits each": {"sha256": ["A" * 64]},
        "$.sha256: 'eq' needs exactly one hash; got 2": {"sha256": [good, good]},
        "$.kind: null only for an empty list; use one of ('str', 'num', 'bool')": {"kind": None},
        "$.kind: 'list' is not one of str, num, bool": {"kind": "list"},
        "$.op: 'gt' cannot be hashed; use one of eq, neq, in, not_in": {"op": "gt"},
    }
    for message, change in cases.items():
        node = {"attribute": "a", "op": "eq", "kind": "str", "sha256": [good]} | change
        assert validate_condition(node) == [message], change
    assert validate_condition({"attribute": "a", "op": "in", "kind": None, "sha256": []}) == []
    assert validate_condition({"attribute": "a", "op": "eq", "sha256": [good]}) == [
        "$: missing ['kind']; a hashed leaf is {attribute, op, kind, sha256}"
    ]


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


_scalars = st.one_of(
    st.text(max_size=4),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(
    op=st.sampled_from(["eq", "neq", "in", "not_in"]),
    values=st.one_of(
        st.lists(st.text(max_size=4), max_size=4),
        st.lists(
            st.integers(min_value=-(2**53), max_value=2**53) | st.floats(-1e9, 1e9), max_size=4
        ),
        st.lists(st.booleans(), max_size=2),
    ),
    actual=st.one_of(_scalars, st.none(), st.lists(st.integers(), max_size=1)),
)
def test_hashing_never_changes_an_answer(op: str, values: list[Any], actual: Any) -> None:
    if op in ("eq", "neq"):
        if not values:
            return
        plain = leaf(op, values[0])
    else:
        plain = leaf(op, values)
    assert validate_condition(plain) == []
    hashed = hash_condition(plain, "salt-1")
    attrs = {"a": actual}
    assert compile_condition(hashed, "salt-1")(attrs) is compile_condition(plain)(attrs)
