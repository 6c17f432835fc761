"""Generate ``tests/fixtures/assignment_vectors.json`` ONCE (the file is checked in).

This is an independent re-implementation of hash version 1 written with straight ``hashlib`` calls
and a hand-written truth table for targeting: it imports nothing from ``trialbook``, so the SDK
tests that read the file compare two implementations.

Run: ``.venv/bin/python tests/sdk/make_vectors.py`` (deterministic: seeded ``random.Random``).
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "assignment_vectors.json"

DOC = {
    "what": "Test vectors pinning Trialbook assignment, hash_version 1. Every implementation "
    "(SDK trialbook.assignment, the service, other SDKs) must reproduce every case.",
    "hash": "x = (int.from_bytes(sha256(data).digest()[:8], 'big') >> 11) / 2**53, in [0, 1)",
    "experiment_hash_data": "UTF-8 of 'tb1:' + seed + ':' + str(phase) + ':' + salt + ':' + unit_id"
    ", salt 'traffic' (in traffic iff x < traffic_fraction; not computed when traffic_fraction "
    "== 1) or 'variant' (variant i = first i with x < cumulative_weight[i], last boundary = 1)",
    "layer_hash_data": "UTF-8 of 'tb1:' + layer_seed + ':layer:' + unit_id (no phase); "
    "holdout iff x < holdout_fraction; "
    "layer_excluded iff not lo <= x < hi for layer_range [lo, hi)",
    "order": "unknown_experiment (variant null) > override (in_experiment false, even if not "
    "running) > not_running > not_targeted > holdout > layer_excluded > traffic_excluded > split; "
    "every non-split reason gives the control variant; malformed experiment -> 'error' + control",
    "hashes": "list of {data (the exact string hashed, UTF-8), float}",
    "cases": "list of {name, config (a full GET /v1/sdk/config body), experiment, unit_id, "
    "attributes (object or null), expected: {variant, in_experiment, reason}}",
    "served": "each case's config as GET /v1/sdk/config serves it (config_version 2): only "
    "experiments that have started (not draft, not archived); 'overrides' replaced by "
    "'override_hashes' {hex(sha256(UTF-8 of the variant hash data of the unit id)): variant}; "
    "targeting withheld (null) unless running, and its eq/neq/in/not_in leaves as {attribute, "
    "op, kind ('str'|'num'|'bool', null for an empty list), sha256: [hex of value hashes]}; "
    "'served_expected' is the answer from it (unknown_experiment when the experiment is not "
    "served), omitted when it equals 'expected'",
    "value_hash_data": "UTF-8 of 'tb1:' + seed + ':value:' + form, form 's:' + string, "
    "'n:' + 16 lowercase hex digits of the number as a big-endian IEEE 754 binary64 (-0 as +0), "
    "'b:true' or 'b:false'; the hash is the lowercase hex SHA-256",
    "value_hashes": "list of {seed, value, data, sha256}",
    "generator": "tests/sdk/make_vectors.py (independent of the trialbook package)",
}


def h(data: str) -> float:
    digest = hashlib.sha256(data.encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / 2**53


def sha_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def value_data(seed: str, value: Any) -> bytes:
    """The value hash input, from the spec in DOC (independent of trialbook.hashing)."""
    head = f"tb1:{seed}:value:".encode()
    if value is True or value is False:
        return head + (b"b:true" if value else b"b:false")
    if isinstance(value, str):
        return head + b"s:" + value.encode("utf-8")
    number = float(value)
    if number == 0:
        number = 0.0
    return head + b"n:" + struct.pack(">d", number).hex().encode("ascii")


def kind_of(value: Any) -> str:
    if value is True or value is False:
        return "bool"
    return "str" if isinstance(value, str) else "num"


def hashed_tree(tree: Any, seed: str) -> Any:
    if tree is None:
        return None
    for group in ("all", "any"):
        if group in tree:
            return {group: [hashed_tree(child, seed) for child in tree[group]]}
    op = tree["op"]
    if op not in ("eq", "neq", "in", "not_in"):
        return dict(tree)
    values = tree["value"] if op in ("in", "not_in") else [tree["value"]]
    return {
        "attribute": tree["attribute"],
        "op": op,
        "kind": kind_of(values[0]) if values else None,
        "sha256": sorted({sha_hex(value_data(seed, v)) for v in values}),
    }


def served(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config as the service serves it (see DOC['served'])."""
    out: dict[str, Any] = {
        "config_version": 2,
        "hash_version": cfg["hash_version"],
        "layers": cfg["layers"],
        "experiments": {},
    }
    for key, exp in cfg["experiments"].items():
        if exp["status"] in ("draft", "archived"):
            continue
        exp = {k: v for k, v in exp.items() if k not in ("overrides", "_malformed")}
        prefix = f"tb1:{exp['seed']}:{exp['phase']}:variant:"
        exp["override_hashes"] = {
            sha_hex((prefix + unit).encode("utf-8")): variant
            for unit, variant in (cfg["experiments"][key]["overrides"] or {}).items()
        }
        running = exp["status"] == "running"
        exp["targeting"] = hashed_tree(exp["targeting"], exp["seed"]) if running else None
        out["experiments"][key] = exp
    return out


def control(exp: dict[str, Any]) -> str:
    return str(next(v["key"] for v in exp["variants"] if v["is_control"]))


# Hand-written truth table: (op, value, attributes, expected). Written from the brief's rules, not
# computed by any code under test.
TARGETING_TABLE: list[tuple[str, Any, dict[str, Any], bool]] = [
    ("eq", "FR", {"country": "FR"}, True),
    ("eq", "FR", {"country": "fr"}, False),
    ("eq", "FR", {}, False),
    ("eq", 3, {"country": 3.0}, True),
    ("eq", True, {"country": 1}, False),
    ("eq", "1", {"country": 1}, False),
    ("neq", "FR", {"country": "US"}, True),
    ("neq", "FR", {"country": "FR"}, False),
    ("neq", "FR", {}, True),
    ("neq", "FR", {"country": 5}, False),
    ("in", ["FR", "DE"], {"country": "DE"}, True),
    ("in", ["FR", "DE"], {"country": "US"}, False),
    ("in", ["FR", "DE"], {}, False),
    ("in", [1, 2], {"country": "1"}, False),
    ("in", [], {"country": "FR"}, False),
    ("not_in", ["FR", "DE"], {"country": "US"}, True),
    ("not_in", ["FR", "DE"], {"country": "FR"}, False),
    ("not_in", ["FR", "DE"], {}, True),
    ("not_in", ["FR"], {"country": 7}, False),
    ("gt", 18, {"country": 19}, True),
    ("gt", 18, {"country": 18}, False),
    ("gte", 18, {"country": 18}, True),
    ("lt", 2.5, {"country": 2.4}, True),
    ("lt", 2.5, {"country": 2.5}, False),
    ("lte", 2.5, {"country": 2.5}, True),
    ("gt", 18, {"country": "19"}, False),
    ("gt", 0, {"country": True}, False),
    ("gte", 18, {}, False),
    ("semver_gt", "2.9.0", {"country": "2.10.0"}, True),
    ("semver_lt", "2.10.0", {"country": "2.9.9"}, True),
    ("semver_eq", "2.10.0", {"country": "2.10.0"}, True),
    ("semver_eq", "2.10.0", {"country": "2.10"}, True),
    ("semver_lt", "1.0.0", {"country": "1.0.0-rc.1"}, True),
    ("semver_gte", "1.0.0", {"country": "1.0.0-rc.1"}, False),
    ("semver_lt", "1.0.0-rc.2", {"country": "1.0.0-rc.1"}, True),
    ("semver_lt", "1.0.0-beta", {"country": "1.0.0-alpha"}, True),
    ("semver_lt", "1.0.0-alpha", {"country": "1.0.0-alpha.1"}, False),
    ("semver_gt", "1.0.0-alpha", {"country": "1.0.0-alpha.1"}, True),
    ("semver_lte", "3.0.0", {"country": "3.0.0+build.7"}, True),
    ("semver_gt", "2.0.0", {"country": "not-a-version"}, False),
    ("semver_gt", "2.0.0", {"country": 3}, False),
    ("semver_gte", "2.0.0", {}, False),
]


def decide(
    config: dict[str, Any], key: str, unit: str, attrs: dict[str, Any] | None, targeted: bool
) -> dict[str, Any]:
    """Independent evaluation; ``targeted`` comes from the hand-written table."""
    exp = config["experiments"].get(key)
    if exp is None:
        return {"variant": None, "in_experiment": False, "reason": "unknown_experiment"}
    ctl = control(exp)
    if exp.get("_malformed"):
        return {"variant": ctl, "in_experiment": False, "reason": "error"}
    if unit in (exp["overrides"] or {}):
        return {"variant": exp["overrides"][unit], "in_experiment": False, "reason": "override"}
    if exp["status"] != "running":
        return {"variant": ctl, "in_experiment": False, "reason": "not_running"}
    if not targeted:
        return {"variant": ctl, "in_experiment": False, "reason": "not_targeted"}
    if exp["layer"] is not None:
        layer = config["layers"][exp["layer"]]
        slot = h(f"tb1:{layer['seed']}:layer:{unit}")
        if slot < layer["holdout_fraction"]:
            return {"variant": ctl, "in_experiment": False, "reason": "holdout"}
        lo, hi = exp["layer_range"]
        if not (lo <= slot < hi):
            return {"variant": ctl, "in_experiment": False, "reason": "layer_excluded"}
    traffic = exp["traffic_fraction"]
    if traffic < 1 and h(f"tb1:{exp['seed']}:{exp['phase']}:traffic:{unit}") >= traffic:
        return {"variant": ctl, "in_experiment": False, "reason": "traffic_excluded"}
    x = h(f"tb1:{exp['seed']}:{exp['phase']}:variant:{unit}")
    total = sum(v["weight"] for v in exp["variants"])
    acc = 0.0
    for i, v in enumerate(exp["variants"]):
        acc += v["weight"]
        if x < acc / total or i == len(exp["variants"]) - 1:
            return {"variant": v["key"], "in_experiment": True, "reason": "split"}
    raise AssertionError("unreachable")


def experiment(key: str, seed: str, phase: int, weights: list[float], **kw: Any) -> dict[str, Any]:
    names = ["control", "treatment", "b", "c", "d"]
    exp = {
        "key": key,
        "status": "running",
        "seed": seed,
        "phase": phase,
        "randomization_unit": "user_id",
        "variants": [
            {"key": names[i], "weight": w, "is_control": i == 0} for i, w in enumerate(weights)
        ],
        "traffic_fraction": 1.0,
        "targeting": None,
        "overrides": {},
        "layer": None,
        "layer_range": None,
    }
    exp.update(kw)
    return exp


def config(exps: list[dict[str, Any]], layers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"hash_version": 1, "layers": layers or {}, "experiments": {e["key"]: e for e in exps}}


def main() -> None:
    rng = random.Random(20261126)
    units = [
        "user-1",
        "user-2",
        "qa-user-1",
        "ünïcødé-Ω",
        "用户-42",
        "🙂-emoji",
        "",
        "a:b:c",
        "12345",
        " spaced id ",
    ]
    units += [f"u{rng.randrange(10**9)}" for _ in range(30)]
    seeds = ["a1b2c3d4", "zz9", "seed-X", "k3j4h5", "p0"]
    weight_sets = [
        [0.5, 0.5],
        [0.1, 0.3, 0.6],
        [0.2, 0.2, 0.2, 0.4],
        [0.9, 0.1],
        [1 / 3, 1 / 3, 1 / 3],
    ]
    cases: list[dict[str, Any]] = []

    def add(
        name: str,
        cfg: dict[str, Any],
        key: str,
        unit: str,
        attrs: dict[str, Any] | None = None,
        targeted: bool = True,
    ) -> None:
        expected = decide(cfg, key, unit, attrs, targeted)
        clean = json.loads(json.dumps(cfg))
        for exp in clean["experiments"].values():
            exp.pop("_malformed", None)
        case = {
            "name": name,
            "config": clean,
            "experiment": key,
            "unit_id": unit,
            "attributes": attrs,
            "expected": expected,
            "served": served(cfg),
        }
        if key in cfg["experiments"] and key not in case["served"]["experiments"]:
            case["served_expected"] = {
                "variant": None,
                "in_experiment": False,
                "reason": "unknown_experiment",
            }
        cases.append(case)

    # 1. plain splits and traffic
    for i in range(160):
        seed = rng.choice(seeds)
        phase = rng.randint(0, 3)
        weights = rng.choice(weight_sets)
        traffic = rng.choice([1.0, 1.0, 0.37, 0.2, 0.5, 0.999])
        unit = rng.choice(units)
        cfg = config([experiment("exp-a", seed, phase, weights, traffic_fraction=traffic)])
        add(f"split-{i}", cfg, "exp-a", unit)
    # 2. statuses, overrides
    for status in ["draft", "paused", "stopped", "concluded", "archived", "running"]:
        for unit in ["qa-user-1", "user-1", "用户-42"]:
            cfg = config(
                [
                    experiment(
                        "exp-s",
                        "a1b2c3d4",
                        1,
                        [0.5, 0.5],
                        status=status,
                        overrides={"qa-user-1": "treatment"},
                    )
                ]
            )
            add(f"status-{status}-{unit}", cfg, "exp-s", unit)
    # override beats traffic exclusion and a failing targeting
    cfg = config(
        [
            experiment(
                "exp-o",
                "zz9",
                2,
                [0.5, 0.5],
                traffic_fraction=0.01,
                overrides={"user-2": "control"},
                targeting={"attribute": "country", "op": "eq", "value": "FR"},
            )
        ]
    )
    add("override-beats-targeting", cfg, "exp-o", "user-2", {"country": "US"}, targeted=False)
    # 3. targeting truth table, each on two units
    for j, (op, value, attrs, truth) in enumerate(TARGETING_TABLE):
        tree = {"attribute": "country", "op": op, "value": value}
        cfg = config([experiment("exp-t", "seed-X", 1, [0.5, 0.5], targeting=tree)])
        for unit in ["user-1", units[10 + j % 20]]:
            add(f"targeting-{j}-{op}-{unit}", cfg, "exp-t", unit, attrs, truth)
    # nested all/any (truth by hand: country FR and (version >= 2.0.0 or beta tester))
    tree = {
        "all": [
            {"attribute": "country", "op": "eq", "value": "FR"},
            {
                "any": [
                    {"attribute": "app", "op": "semver_gte", "value": "2.0.0"},
                    {"attribute": "beta", "op": "eq", "value": True},
                ]
            },
        ]
    }
    nested: list[tuple[dict[str, Any] | None, bool]] = [
        ({"country": "FR", "app": "2.1.0"}, True),
        ({"country": "FR", "beta": True}, True),
        ({"country": "FR", "app": "1.9.9", "beta": False}, False),
        ({"country": "DE", "app": "3.0.0"}, False),
        (None, False),
        ({"country": "FR", "app": "2.0.0-rc.1"}, False),
    ]
    for j, (nested_attrs, truth) in enumerate(nested):
        cfg = config([experiment("exp-n", "p0", 1, [0.5, 0.5], targeting=tree)])
        add(f"nested-{j}", cfg, "exp-n", "user-1", nested_attrs, truth)
    for group, truth in (("all", True), ("any", False)):
        cfg = config([experiment("exp-e", "p0", 1, [0.5, 0.5], targeting={group: []})])
        add(f"empty-{group}", cfg, "exp-e", "user-2", {}, truth)
    # 4. layers and holdouts
    layers = {
        "checkout": {"seed": "k3j4h5", "holdout_fraction": 0.05},
        "search": {"seed": "s7", "holdout_fraction": 0.0},
    }
    exps = [
        experiment("lay-a", "a1b2c3d4", 1, [0.5, 0.5], layer="checkout", layer_range=[0.05, 0.4]),
        experiment(
            "lay-b",
            "zz9",
            1,
            [0.1, 0.3, 0.6],
            layer="checkout",
            layer_range=[0.4, 1.0],
            traffic_fraction=0.5,
        ),
        experiment("lay-c", "seed-X", 3, [0.5, 0.5], layer="search", layer_range=[0.0, 0.3]),
    ]
    cfg = config(exps, layers)
    for unit in units:
        for key in ("lay-a", "lay-b", "lay-c"):
            add(f"layer-{key}-{unit}", cfg, key, unit)
    # 5. unknown experiment and malformed experiments (error + control)
    add("unknown", cfg, "does-not-exist", "user-1")
    bad = experiment("bad-w", "a1b2c3d4", 1, [0.5, 0.6])
    bad["_malformed"] = True
    add("malformed-weights", config([bad]), "bad-w", "user-1")
    bad = experiment("bad-s", "a1b2c3d4", 1, [0.5, 0.5], status="exploded")
    bad["_malformed"] = True
    add("malformed-status", config([bad]), "bad-s", "user-1")

    hashes = []
    for unit in units[:12]:
        for data in (
            f"tb1:a1b2c3d4:1:variant:{unit}",
            f"tb1:a1b2c3d4:1:traffic:{unit}",
            f"tb1:k3j4h5:layer:{unit}",
        ):
            hashes.append({"data": data, "float": h(data)})

    value_hashes = []
    for seed, value in [
        ("a1b2c3d4", "FR"),
        ("a1b2c3d4", "fr"),
        ("a1b2c3d4", ""),
        ("a1b2c3d4", "ünïcødé-Ω"),
        ("a1b2c3d4", "用户-42"),
        ("a1b2c3d4", "a:b:c"),
        ("a1b2c3d4", "qa@example.com"),
        ("zz9", "qa@example.com"),
        ("p0", "3"),
        ("p0", 3),
        ("p0", 3.0),
        ("p0", -0.0),
        ("p0", 0),
        ("p0", 2.5),
        ("p0", -17),
        ("p0", 1e300),
        ("p0", 2**53),
        ("p0", True),
        ("p0", False),
    ]:
        data = value_data(seed, value)
        value_hashes.append(
            {
                "seed": seed,
                "value": value,
                "data": data.decode("utf-8"),
                "sha256": sha_hex(data),
            }
        )

    lines = [
        "{",
        f' "_doc": {json.dumps(DOC, ensure_ascii=False)},',
        ' "hash_version": 1,',
        ' "hashes": [',
    ]
    lines.append(",\n".join("  " + json.dumps(x, ensure_ascii=False) for x in hashes))
    lines.append(" ],")
    lines.append(' "value_hashes": [')
    lines.append(",\n".join("  " + json.dumps(x, ensure_ascii=False) for x in value_hashes))
    lines.append(" ],")
    lines.append(' "cases": [')
    lines.append(",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cases))
    lines.append(" ]")
    lines.append("}")
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    reasons: dict[str, int] = {}
    for c in cases:
        reasons[c["expected"]["reason"]] = reasons.get(c["expected"]["reason"], 0) + 1
    print(f"wrote {len(cases)} cases, {len(hashes)} hashes to {OUT}: {reasons}")


if __name__ == "__main__":
    main()
