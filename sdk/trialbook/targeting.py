"""Targeting conditions: validation, compilation and evaluation.

A condition tree is ``None`` (everyone) or one node::

    {"all": [node, ...]}      every child true (an empty list is true)
    {"any": [node, ...]}      at least one child true (an empty list is false)
    {"attribute": NAME, "op": OP, "value": V}

=================================  ===========================================================
op                                 value
=================================  ===========================================================
``eq``, ``neq``                    a string, a number or a boolean
``in``, ``not_in``                 a list of strings, or of numbers, or of booleans
``gt``, ``gte``, ``lt``, ``lte``   a number
``semver_eq`` ... ``semver_lte``   a semver string such as ``"2.10.0"`` or ``"1.0.0-rc.1"``
=================================  ===========================================================

Hashed leaves (the served form)
-------------------------------
The service serves ``eq``, ``neq``, ``in`` and ``not_in`` leaves without their values (they may
be e-mail addresses or user ids)::

    {"attribute": NAME, "op": OP, "kind": KIND, "sha256": [HEX, ...]}

``kind`` is the JSON type of the value(s): ``"str"``, ``"num"`` or ``"bool"`` (``null`` only for
an empty ``in``/``not_in`` list); ``sha256`` holds :func:`trialbook.hashing.value_hash` of each
value, salted by the experiment's seed (exactly one for ``eq``/``neq``). A hashed leaf evaluates
exactly like the plain one: the attribute's kind is checked first (a mismatch is false), then its
own value hash is looked up. Each compiled leaf remembers the answer for the last few thousand
attribute values, so a repeated value (a country, a plan) costs a dictionary lookup, not a hash.
An attribute that cannot be hashed (a string with a lone surrogate, an int beyond the range of a
double) makes a hashed leaf false. Ordered comparisons (``gt``... and ``semver_*``) are served in
clear. :func:`hash_condition` turns a plain tree into the hashed one.

Evaluation rules (never raises):

- A missing attribute (absent or ``None``) makes every leaf false except ``neq`` and ``not_in``,
  which are true.
- A type mismatch makes the leaf false, whatever the op (``neq`` too). Numbers are ``int`` or
  ``float`` (``bool`` is not a number); strings compare case-sensitively.
- Semver: the numeric parts are compared as integers part by part (missing parts count as 0, an
  optional leading ``v`` is ignored); a pre-release is lower than its release and pre-release
  identifiers compare as in SemVer 2.0.0 §11; build metadata (``+...``) is ignored. An attribute
  that is not a valid version makes the leaf false.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from trialbook.hashing import value_form, value_hash, value_prefix

__all__ = [
    "OPS",
    "Predicate",
    "compile_condition",
    "evaluate_condition",
    "hash_condition",
    "parse_semver",
    "validate_condition",
]

Predicate = Callable[[Mapping[str, Any] | None], bool]

_EQUALITY_OPS: Final = ("eq", "neq")
_LIST_OPS: Final = ("in", "not_in")
_NUMERIC_OPS: Final = ("gt", "gte", "lt", "lte")
_SEMVER_OPS: Final = ("semver_eq", "semver_gt", "semver_gte", "semver_lt", "semver_lte")
OPS: Final = _EQUALITY_OPS + _LIST_OPS + _NUMERIC_OPS + _SEMVER_OPS
HASHED_OPS: Final = _EQUALITY_OPS + _LIST_OPS
KINDS: Final = ("str", "num", "bool")
_HEX_RE: Final = re.compile(r"^[0-9a-f]{64}$")
# Answers a hashed leaf remembers (per leaf; the memo is emptied when full).
_MEMO_MAX: Final = 4096

_SEMVER_RE: Final = re.compile(
    r"^v?(?P<nums>\d+(?:\.\d+)*)(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)

# A comparable semver key: (numeric parts padded to 3, release flag, pre-release identifiers).
SemverKey = tuple[tuple[int, ...], int, tuple[tuple[int, int, str], ...]]


def parse_semver(text: str) -> SemverKey | None:
    """Parse a version string into a key that orders like SemVer 2.0.0.

    Parameters
    ----------
    text : str
        ``MAJOR[.MINOR[.PATCH[...]]][-PRERELEASE][+BUILD]``, optional leading ``v``.

    Returns
    -------
    tuple or None
        A key for ``<``/``==`` comparison, or None when ``text`` is not a version.

    Examples
    --------
    >>> parse_semver("2.10.0") > parse_semver("2.9.1")
    True
    >>> parse_semver("1.0.0-rc.1") < parse_semver("1.0.0")
    True
    """
    match = _SEMVER_RE.match(text)
    if match is None:
        return None
    nums = [int(part) for part in match.group("nums").split(".")]
    while len(nums) < 3:
        nums.append(0)
    while len(nums) > 3 and nums[-1] == 0:
        nums.pop()
    pre = match.group("pre")
    if pre is None:
        return (tuple(nums), 1, ())
    # SemVer §11.4: numeric identifiers sort numerically and below alphanumeric ones.
    idents = tuple(
        (0, int(ident), "") if ident.isdigit() else (1, 0, ident) for ident in pre.split(".")
    )
    return (tuple(nums), 0, idents)


def _kind(value: object) -> str | None:
    """Return the comparison class of a scalar: 'str', 'num', 'bool', or None."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "num"
    if isinstance(value, str):
        return "str"
    return None


def validate_condition(tree: object, path: str = "$") -> list[str]:
    """Check a targeting tree and describe every problem.

    Parameters
    ----------
    tree : object
        The parsed JSON tree (``None`` is valid: no targeting).
    path : str, optional
        The JSON path of ``tree``, used as the prefix of each message.

    Returns
    -------
    list of str
        One message per bad node, ``"<path>: <what is wrong>; <how to fix>"``; empty when valid.

    Examples
    --------
    >>> validate_condition({"attribute": "country", "op": "contains", "value": "US"})
    ["$.op: unknown op 'contains'; use one of eq, neq, in, not_in, gt, gte, lt, lte, semver_eq, semver_gt, semver_gte, semver_lt, semver_lte"]
    """  # noqa: E501
    if tree is None:
        return []
    return _validate_node(tree, path)


def _validate_node(node: object, path: str) -> list[str]:
    if not isinstance(node, Mapping):
        return [f"{path}: expected an object ({{'all': [...]}}, {{'any': [...]}} or a leaf)"]
    keys = set(node)
    if keys in ({"all"}, {"any"}):
        (group,) = keys
        children = node[group]
        if not isinstance(children, list):
            return [f"{path}.{group}: expected a list of conditions"]
        errors: list[str] = []
        for i, child in enumerate(children):
            errors.extend(_validate_node(child, f"{path}.{group}[{i}]"))
        return errors
    if "all" in keys or "any" in keys:
        return [f"{path}: a group has exactly one key, 'all' or 'any'; got {sorted(keys)}"]
    if "sha256" in keys:
        return _validate_hashed_leaf(node, keys, path)
    required = {"attribute", "op", "value"}
    errors = []
    missing = required - keys
    extra = keys - required
    if missing:
        errors.append(f"{path}: missing {sorted(missing)}; a leaf is {{attribute, op, value}}")
    if extra:
        errors.append(
            f"{path}: unexpected keys {sorted(extra)}; a leaf is {{attribute, op, value}}"
        )
    if missing:
        return errors
    attribute, op, value = node["attribute"], node["op"], node["value"]
    if not isinstance(attribute, str) or not attribute:
        errors.append(f"{path}.attribute: expected a non-empty string")
    if op not in OPS:
        errors.append(f"{path}.op: unknown op {op!r}; use one of {', '.join(OPS)}")
        return errors
    errors.extend(_validate_value(op, value, f"{path}.value"))
    return errors


def _validate_hashed_leaf(node: Mapping[Any, Any], keys: set[Any], path: str) -> list[str]:
    required = {"attribute", "op", "kind", "sha256"}
    shape = "a hashed leaf is {attribute, op, kind, sha256}"
    errors: list[str] = []
    missing = required - keys
    extra = keys - required
    if missing:
        errors.append(f"{path}: missing {sorted(missing)}; {shape}")
    if extra:
        errors.append(f"{path}: unexpected keys {sorted(extra)}; {shape}")
    if missing:
        return errors
    attribute, op, kind, hashes = node["attribute"], node["op"], node["kind"], node["sha256"]
    if not isinstance(attribute, str) or not attribute:
        errors.append(f"{path}.attribute: expected a non-empty string")
    if op not in HASHED_OPS:
        errors.append(f"{path}.op: {op!r} cannot be hashed; use one of {', '.join(HASHED_OPS)}")
        return errors
    if not isinstance(hashes, list) or not all(
        isinstance(h, str) and _HEX_RE.match(h) for h in hashes
    ):
        errors.append(f"{path}.sha256: expected a list of 64 lowercase hex digits each")
        return errors
    if op in _EQUALITY_OPS and len(hashes) != 1:
        errors.append(f"{path}.sha256: '{op}' needs exactly one hash; got {len(hashes)}")
    if kind is None:
        if op in _EQUALITY_OPS or hashes:
            errors.append(f"{path}.kind: null only for an empty list; use one of {KINDS}")
    elif kind not in KINDS:
        errors.append(f"{path}.kind: {kind!r} is not one of {', '.join(KINDS)}")
    return errors


def _validate_value(op: str, value: object, path: str) -> list[str]:
    if op in _EQUALITY_OPS:
        if _kind(value) is None:
            return [f"{path}: '{op}' needs a string, number or boolean; got {_describe(value)}"]
        if isinstance(value, float) and not math.isfinite(value):
            return [f"{path}: '{op}' needs a finite number"]
        return []
    if op in _LIST_OPS:
        if not isinstance(value, list):
            return [f"{path}: '{op}' needs a list; got {_describe(value)}"]
        kinds = {_kind(item) for item in value}
        if None in kinds:
            return [f"{path}: '{op}' list items must be strings, numbers or booleans"]
        if len(kinds) > 1:
            return [f"{path}: '{op}' list mixes {sorted(k for k in kinds if k)}; use one type"]
        return []
    if op in _NUMERIC_OPS:
        if _kind(value) != "num" or not math.isfinite(value):  # type: ignore[arg-type]
            return [f"{path}: '{op}' needs a finite number; got {_describe(value)}"]
        return []
    if not isinstance(value, str) or parse_semver(value) is None:
        return [f"{path}: '{op}' needs a version string like '2.10.0'; got {_describe(value)}"]
    return []


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _always(_attributes: Mapping[str, Any] | None) -> bool:
    return True


def compile_condition(tree: object, salt: str | None = None) -> Predicate:
    """Compile a *valid* targeting tree into a fast predicate over attributes.

    Parameters
    ----------
    tree : object
        A tree for which :func:`validate_condition` returned no error.
    salt : str, optional
        The experiment's seed: needed when the tree has hashed leaves.

    Returns
    -------
    Callable
        ``predicate(attributes) -> bool``; it never raises.

    Raises
    ------
    ValueError
        If ``tree`` is invalid (call :func:`validate_condition` first for the messages), or has
        hashed leaves and no ``salt``.
    """
    errors = validate_condition(tree)
    if errors:
        raise ValueError("; ".join(errors))
    if tree is None:
        return _always
    return _compile_node(tree, salt)


def _compile_node(node: Any, salt: str | None) -> Predicate:
    if "all" in node:
        children = tuple(_compile_node(child, salt) for child in node["all"])

        def all_of(attributes: Mapping[str, Any] | None) -> bool:
            return all(child(attributes) for child in children)

        return all_of
    if "any" in node:
        children = tuple(_compile_node(child, salt) for child in node["any"])

        def any_of(attributes: Mapping[str, Any] | None) -> bool:
            return any(child(attributes) for child in children)

        return any_of
    if "sha256" in node:
        if salt is None:
            raise ValueError("a hashed leaf needs the experiment's seed as salt")
        test = _hashed_test(node["op"], node["kind"], node["sha256"], salt)
    else:
        test = _leaf_test(node["op"], node["value"])
    return _compile_leaf(node["attribute"], node["op"], test)


def _compile_leaf(attribute: str, op: str, test: Callable[[Any], bool]) -> Predicate:
    missing_result = op in ("neq", "not_in")

    def leaf(attributes: Mapping[str, Any] | None) -> bool:
        actual = None if attributes is None else attributes.get(attribute)
        if actual is None:
            return missing_result
        try:
            return test(actual)
        except Exception:  # a hostile __eq__/__lt__ must not escape: mismatch is false
            return False

    return leaf


def _hashed_test(op: str, kind: str | None, hashes: list[str], salt: str) -> Callable[[Any], bool]:
    prefix = value_prefix(salt)
    members = frozenset(hashes)
    positive = op in ("eq", "in")
    memo: dict[Any, bool] = {}
    sha256 = hashlib.sha256

    def hashed(actual: Any) -> bool:
        actual_kind = _kind(actual)
        if actual_kind is None or (kind is not None and actual_kind != kind):
            return False
        # Safe as a key: past the kind check, equal keys (1 and 1.0, -0.0 and 0.0) share a form.
        known = memo.get(actual)
        if known is not None:
            return known
        try:
            digest = sha256(prefix + value_form(actual)).hexdigest()
        except (UnicodeEncodeError, OverflowError):
            return False
        answer = (digest in members) is positive
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        memo[actual] = answer
        return answer

    return hashed


def hash_condition(tree: Any, salt: str) -> Any:
    """Return a valid targeting tree with its ``eq``/``neq``/``in``/``not_in`` values hashed.

    Parameters
    ----------
    tree : object
        A tree for which :func:`validate_condition` returned no error (None stays None).
    salt : str
        The experiment's seed.

    Returns
    -------
    object
        The same tree, each such leaf as ``{attribute, op, kind, sha256}`` (see the module
        docstring); other leaves, already hashed leaves and groups are copied as they are.
    """
    if tree is None:
        return None
    if "all" in tree or "any" in tree:
        (group,) = tree
        return {group: [hash_condition(child, salt) for child in tree[group]]}
    op = tree["op"]
    if op not in HASHED_OPS or "sha256" in tree:
        return dict(tree)
    values = tree["value"] if op in _LIST_OPS else [tree["value"]]
    kinds = {_kind(v) for v in values}
    return {
        "attribute": tree["attribute"],
        "op": op,
        "kind": kinds.pop() if kinds else None,
        "sha256": sorted({value_hash(salt, v) for v in values}),
    }


def _leaf_test(op: str, value: Any) -> Callable[[Any], bool]:
    if op in _EQUALITY_OPS:
        kind = _kind(value)
        if op == "eq":
            return lambda actual: _kind(actual) == kind and bool(actual == value)
        return lambda actual: _kind(actual) == kind and bool(actual != value)
    if op in _LIST_OPS:
        kinds = {_kind(item) for item in value}
        members = frozenset(value)
        inside = op == "in"

        def member(actual: Any) -> bool:
            kind = _kind(actual)
            if kind is None or (kinds and kind not in kinds):
                return False
            return (actual in members) is inside

        return member
    if op in _NUMERIC_OPS:
        number = float(value)
        compare: Callable[[float, float], bool] = {
            "gt": float.__gt__,
            "gte": float.__ge__,
            "lt": float.__lt__,
            "lte": float.__le__,
        }[op]

        def numeric(actual: Any) -> bool:
            return _kind(actual) == "num" and compare(float(actual), number)

        return numeric
    target = parse_semver(value)
    assert target is not None  # guaranteed by validation

    def semver(actual: Any) -> bool:
        if not isinstance(actual, str):
            return False
        key = parse_semver(actual)
        if key is None:
            return False
        if op == "semver_eq":
            return key == target
        if op == "semver_gt":
            return key > target
        if op == "semver_gte":
            return key >= target
        if op == "semver_lt":
            return key < target
        return key <= target

    return semver


def evaluate_condition(
    tree: object, attributes: Mapping[str, Any] | None, salt: str | None = None
) -> bool:
    """Evaluate a targeting tree against attributes (convenience; compiles on every call).

    Parameters
    ----------
    tree : object
        A targeting tree or None.
    attributes : Mapping or None
        The unit's attributes.
    salt : str, optional
        The experiment's seed, for a tree with hashed leaves.

    Returns
    -------
    bool
        Whether the unit is targeted; False for an invalid tree (never raises).
    """
    if validate_condition(tree):
        return False
    try:
        return compile_condition(tree, salt)(attributes)
    except ValueError:  # hashed leaves without a salt
        return False
