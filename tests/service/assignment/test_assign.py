"""POST /v1/assign: the shared vectors, agreement with the SDK's hashing on random units, rules."""

from __future__ import annotations

import bisect
import json
import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from trialbook.assignment import compile_config
from trialbook.hashing import SALT_TRAFFIC, SALT_VARIANT, layer_float, unit_float


def _assign(client: Any, headers: dict[str, str], **body: Any) -> list[dict[str, Any]]:
    r = client.post("/v1/assign", json=body, headers=headers)
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()["assignments"]
    return out


def _producible(config: dict[str, Any]) -> bool:
    """Whether the service can hold this config's state: no archived experiment (left out of the
    config), drafts without a layer slice, and a config the SDK finds valid."""
    return not compile_config(config).errors and all(
        exp["status"] != "archived" and (exp["status"] != "draft" or exp["layer"] is None)
        for exp in config["experiments"].values()
    )


def test_server_reproduces_every_vector(
    client: Any,
    sdk: dict[str, str],
    vectors: dict[str, Any],
    write_config: Callable[[dict[str, Any]], None],
) -> None:
    from service.assignment.models import AssignIn
    from service.assignment.service import assign, snapshot_of

    by_config: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for case in vectors["cases"]:
        by_config[json.dumps(case["config"], sort_keys=True)].append(case)
    through_db = through_code = 0
    for cases in by_config.values():
        config = cases[0]["config"]
        if _producible(config):
            # The state lives in the database; the server's own config must be the vector's.
            write_config(config)
            r = client.get("/v1/sdk/config", headers=sdk)
            assert r.status_code == 200
            # Served as the vectors' independent generator says: no drafts, hashes only.
            assert r.json() == cases[0]["served"], cases[0]["name"]
            downloaded = compile_config(r.json())
            for case in cases:
                local = downloaded.evaluate(case["experiment"], case["unit_id"], case["attributes"])
                served_expected = case.get("served_expected", case["expected"])
                assert {**local.to_dict(), "experiment": case["experiment"]} == {
                    "experiment": case["experiment"],
                    **served_expected,
                }, case["name"]
                got = _assign(
                    client,
                    sdk,
                    unit_id=case["unit_id"],
                    attributes=case["attributes"],
                    experiments=[case["experiment"]],
                )
                assert got == [{"experiment": case["experiment"], **case["expected"]}], case["name"]
                through_db += 1
        else:
            # Archived experiments, malformed configs: the route's own code path on the config.
            compiled = snapshot_of(config).compiled
            for case in cases:
                body = AssignIn(
                    unit_id=case["unit_id"],
                    attributes=case["attributes"],
                    experiments=[case["experiment"]],
                )
                got = [a.to_dict() for a in assign(compiled, body)]
                assert got == [{"experiment": case["experiment"], **case["expected"]}], case["name"]
                through_code += 1
    assert through_db + through_code == len(vectors["cases"])
    assert through_db >= 380 and through_code >= 5, (through_db, through_code)


def _expected(exp: dict[str, Any], layer: dict[str, Any] | None, unit: str) -> tuple[str, str]:
    """The documented algorithm (trialbook.hashing docstring), from the raw hash primitives."""
    control = next(v["key"] for v in exp["variants"] if v["is_control"])
    if layer is not None:
        slot = layer_float(layer["seed"], unit)
        if slot < layer["holdout_fraction"]:
            return control, "holdout"
        lo, hi = exp["layer_range"]
        if not lo <= slot < hi:
            return control, "layer_excluded"
    traffic = exp["traffic_fraction"]
    if traffic < 1 and unit_float(exp["seed"], exp["phase"], SALT_TRAFFIC, unit) >= traffic:
        return control, "traffic_excluded"
    cum, total = [], 0.0
    for v in exp["variants"]:
        total += v["weight"]
        cum.append(total)
    cum[-1] = 1.0
    x = unit_float(exp["seed"], exp["phase"], SALT_VARIANT, unit)
    return exp["variants"][bisect.bisect_right(cum, x)]["key"], "split"


def test_server_agrees_with_the_sdk_hashing_on_100000_random_units(
    client: Any, admin: dict[str, str], sdk: dict[str, str], make_experiment: Any, engine: Any
) -> None:
    from service.assignment.models import AssignIn
    from service.assignment.service import ConfigCache, assign
    from service.db import open_session

    layer = {"key": "home", "holdout_fraction": 0.1}
    assert client.post("/v1/layers", json=layer, headers=admin).status_code == 201
    make_experiment(
        "three-way",
        start=True,
        traffic_fraction=0.37,
        variants=[
            {"key": "control", "weight": 0.1, "is_control": True},
            {"key": "b", "weight": 0.3},
            {"key": "c", "weight": 0.6},
        ],
    )
    make_experiment("layered", start=True, layer="home", layer_allocation=0.5)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT key, seed FROM experiment")).all()
        layer_seed = conn.execute(text("SELECT seed FROM layer")).one()[0]
    seeds = dict(rows)
    layered_range = client.get("/v1/experiments/layered", headers=admin).json()["layer_range"]
    exps = {
        "three-way": {
            "seed": seeds["three-way"],
            "phase": 1,
            "traffic_fraction": 0.37,
            "variants": [
                {"key": "control", "weight": 0.1, "is_control": True},
                {"key": "b", "weight": 0.3, "is_control": False},
                {"key": "c", "weight": 0.6, "is_control": False},
            ],
        },
        "layered": {
            "seed": seeds["layered"],
            "phase": 1,
            "traffic_fraction": 1.0,
            "layer_range": layered_range,
            "variants": [
                {"key": "control", "weight": 0.5, "is_control": True},
                {"key": "treatment", "weight": 0.5, "is_control": False},
            ],
        },
    }
    layers = {"three-way": None, "layered": {"seed": layer_seed, "holdout_fraction": 0.1}}
    rng = random.Random(20240601)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_é用🙂"
    units = ["".join(rng.choices(alphabet, k=rng.randint(1, 24))) for _ in range(100_000)]

    with open_session() as session:
        compiled = ConfigCache().get(session).compiled
    reasons: dict[str, int] = defaultdict(int)
    for unit in units:
        got = assign(compiled, AssignIn(unit_id=unit))
        assert [a.experiment for a in got] == ["layered", "three-way"]
        for a in got:
            want = _expected(exps[a.experiment], layers[a.experiment], unit)
            assert (a.variant, a.reason.value) == want, (unit, a)
            reasons[a.reason.value] += 1
    assert {"split", "holdout", "layer_excluded", "traffic_excluded"} <= set(reasons)

    for unit in units[:300]:  # a sample through HTTP
        got = _assign(client, sdk, unit_id=unit)
        for item in got:
            variant, reason = _expected(exps[item["experiment"]], layers[item["experiment"]], unit)
            assert (item["variant"], item["reason"]) == (variant, reason)
            assert item["in_experiment"] is (reason == "split")


def test_unknown_experiments_and_request_order(
    client: Any, sdk: dict[str, str], make_experiment: Any
) -> None:
    make_experiment("bbb-exp", start=True)
    make_experiment("aaa-exp")
    got = _assign(client, sdk, unit_id="u-1", experiments=["nope", "bbb-exp", "aaa-exp"])
    assert [a["experiment"] for a in got] == ["nope", "bbb-exp", "aaa-exp"]
    assert got[0] == {
        "experiment": "nope",
        "variant": None,
        "in_experiment": False,
        "reason": "unknown_experiment",
    }
    assert got[1]["reason"] == "split" and got[1]["in_experiment"] is True
    assert got[2] == {
        "experiment": "aaa-exp",
        "variant": "control",
        "in_experiment": False,
        "reason": "not_running",
    }
    # Omitted: every experiment of the SDK config, by key: never a draft (product.md §10).
    assert [a["experiment"] for a in _assign(client, sdk, unit_id="u-1")] == ["bbb-exp"]


def test_paused_stopped_and_overrides(
    client: Any, admin: dict[str, str], sdk: dict[str, str], make_experiment: Any
) -> None:
    make_experiment("life", start=True, overrides={"qa": "treatment"})
    assert _assign(client, sdk, unit_id="qa", experiments=["life"])[0]["reason"] == "override"
    for action in ("pause", "stop"):
        assert client.post(f"/v1/experiments/life/{action}", headers=admin).status_code == 200
        plain = _assign(client, sdk, unit_id="someone", experiments=["life"])[0]
        assert (plain["variant"], plain["reason"]) == ("control", "not_running")
        forced = _assign(client, sdk, unit_id="qa", experiments=["life"])[0]
        assert forced == {
            "experiment": "life",
            "variant": "treatment",
            "in_experiment": False,
            "reason": "override",
        }


def test_targeting_uses_the_request_attributes(
    client: Any, sdk: dict[str, str], make_experiment: Any
) -> None:
    make_experiment(
        "targeted",
        start=True,
        targeting={"attribute": "app", "op": "semver_gte", "value": "2.0.0"},
    )
    old = _assign(client, sdk, unit_id="u", attributes={"app": "1.9.0"})[0]
    assert old["reason"] == "not_targeted"
    new = _assign(client, sdk, unit_id="u", attributes={"app": "2.10.0"})[0]
    assert new["reason"] == "split"


def test_request_is_strict(client: Any, sdk: dict[str, str]) -> None:
    for body in (
        {},
        {"unit_id": "", "log_exposure": True},
        {"unit_id": 42},
        {"unit_id": "u", "log_exposure": 1},
        {"unit_id": "u", "experiments": "one"},
        {"unit_id": "u", "attributes": ["x"]},
        {"unit_id": "u", "extra": True},
        {"unit_id": "x" * 257},
    ):
        r = client.post("/v1/assign", json=body, headers=sdk)
        assert r.status_code == 422, body
        assert r.headers["content-type"] == "application/problem+json"


def test_errors_name_the_field_and_malformed_json_is_400(client: Any, sdk: dict[str, str]) -> None:
    r = client.post("/v1/assign", json={"unit_id": 42}, headers=sdk)
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["unit_id"]
    r = client.post(
        "/v1/assign", content=b'{"unit_id": ', headers=sdk | {"Content-Type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["code"] == "malformed_json"


def test_a_revoked_key_is_refused(
    client: Any, admin: dict[str, str], keys: dict[str, dict[str, str]]
) -> None:
    listed = client.get("/v1/keys", headers=admin).json()["items"]
    sdk_id = next(k["id"] for k in listed if k["role"] == "sdk")
    assert client.post("/v1/assign", json={"unit_id": "u"}, headers=keys["sdk"]).status_code == 200
    assert client.delete(f"/v1/keys/{sdk_id}", headers=admin).status_code == 200
    r = client.post("/v1/assign", json={"unit_id": "u"}, headers=keys["sdk"])
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
