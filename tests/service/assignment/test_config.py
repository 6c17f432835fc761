"""GET /v1/sdk/config: contents, ETag / 304, cache invalidation across processes, roles."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from sqlalchemy import text
from trialbook.assignment import Reason, compile_config, validate_config


def _config(client: Any, headers: dict[str, str]) -> Any:
    r = client.get("/v1/sdk/config", headers=headers)
    assert r.status_code == 200, r.text
    return r


def _seed_of(engine: Any, key: str) -> str:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT seed FROM experiment WHERE key = :k"), {"k": key}).one()
        return str(row[0])


def _hex(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()


def test_config_describes_experiments_as_the_sdk_expects(
    client: Any, admin: dict[str, str], sdk: dict[str, str], make_experiment: Any, engine: Any
) -> None:
    make_experiment(
        "checkout-a",
        start=True,
        traffic_fraction=0.5,
        targeting={
            "all": [
                {"attribute": "country", "op": "in", "value": ["FR", "DE"]},
                {"attribute": "app", "op": "semver_gte", "value": "2.0.0"},
                {"attribute": "age", "op": "gte", "value": 18},
            ]
        },
        overrides={"qa-1": "treatment"},
    )
    r = _config(client, sdk)
    config = r.json()
    assert validate_config(config) == []
    seed = _seed_of(engine, "checkout-a")
    # The hashes by hand (trialbook.hashing's docstring), not through the SDK.
    countries = sorted(_hex(f"tb1:{seed}:value:s:{c}") for c in ("FR", "DE"))
    assert config == {
        "config_version": 2,
        "hash_version": 1,
        "layers": {},
        "experiments": {
            "checkout-a": {
                "key": "checkout-a",
                "status": "running",
                "seed": seed,
                "phase": 1,
                "randomization_unit": "user_id",
                "variants": [
                    {"key": "control", "weight": 0.5, "is_control": True},
                    {"key": "treatment", "weight": 0.5, "is_control": False},
                ],
                "traffic_fraction": 0.5,
                "targeting": {
                    "all": [
                        {"attribute": "country", "op": "in", "kind": "str", "sha256": countries},
                        {"attribute": "app", "op": "semver_gte", "value": "2.0.0"},
                        {"attribute": "age", "op": "gte", "value": 18},
                    ]
                },
                "override_hashes": {_hex(f"tb1:{seed}:1:variant:qa-1"): "treatment"},
                "layer": None,
                "layer_range": None,
            }
        },
    }
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-cache"


def test_an_sdk_key_reads_no_draft_no_override_unit_id_and_no_list_value(
    client: Any, admin: dict[str, str], sdk: dict[str, str], make_experiment: Any
) -> None:
    secrets = ("qa.lead@example.com", "vip@example.com", "ceo@example.com", "secret-launch")
    make_experiment(
        "vip-pricing",
        start=True,
        overrides={secrets[0]: "treatment"},
        targeting={
            "any": [
                {"attribute": "email", "op": "in", "value": [secrets[1], secrets[2]]},
                {"attribute": "email", "op": "eq", "value": "x@example.com"},
                {"attribute": "plan", "op": "not_in", "value": ["free"]},
            ]
        },
    )
    make_experiment(secrets[3], overrides={"draft-qa@example.com": "treatment"})
    body = _config(client, sdk).text
    for secret in (*secrets, "draft-qa@example.com", "x@example.com", '"free"'):
        assert secret not in body, secret
    # The SDK still evaluates the served config exactly: the override and the list work.
    compiled = compile_config(_config(client, sdk).json())
    assert compiled.errors == []
    forced = compiled.evaluate("vip-pricing", secrets[0])
    assert (forced.variant, forced.reason) == ("treatment", Reason.OVERRIDE)
    vip = compiled.evaluate("vip-pricing", "u1", {"email": secrets[1], "plan": "free"})
    assert vip.reason is Reason.SPLIT
    nobody = compiled.evaluate("vip-pricing", "u1", {"email": "a@b.c", "plan": "free"})
    assert nobody.reason is Reason.NOT_TARGETED
    # The draft is not listed anywhere an SDK key can read in bulk.
    assert compiled.evaluate(secrets[3], "u1").reason is Reason.UNKNOWN_EXPERIMENT
    everything = client.post("/v1/assign", json={"unit_id": "u1"}, headers=sdk).json()
    assert [a["experiment"] for a in everything["assignments"]] == ["vip-pricing"]
    ctx = {"context": {"targetingKey": "u1"}}
    bulk = client.post("/ofrep/v1/evaluate/flags", json=ctx, headers=sdk)
    assert [f["key"] for f in bulk.json()["flags"]] == ["vip-pricing"]
    assert secrets[3] not in bulk.text


def test_paused_and_stopped_experiments_keep_their_overrides_but_not_their_targeting(
    client: Any, admin: dict[str, str], sdk: dict[str, str], make_experiment: Any
) -> None:
    targeting = {"attribute": "country", "op": "in", "value": ["FR"]}
    make_experiment("ramping", start=True, targeting=targeting, overrides={"qa": "treatment"})
    for action in ("pause", "stop"):
        assert client.post(f"/v1/experiments/ramping/{action}", headers=admin).status_code == 200
        config = _config(client, sdk).json()
        exp = config["experiments"]["ramping"]
        assert exp["targeting"] is None and len(exp["override_hashes"]) == 1
        compiled = compile_config(config)
        assert compiled.evaluate("ramping", "qa").reason is Reason.OVERRIDE
        plain = compiled.evaluate("ramping", "u1", {"country": "FR"})
        assert (plain.variant, plain.reason) == ("control", Reason.NOT_RUNNING)


def test_drafts_and_archived_experiments_are_not_served(
    client: Any, admin: dict[str, str], sdk: dict[str, str], make_experiment: Any
) -> None:
    assert client.post("/v1/layers", json={"key": "checkout"}, headers=admin).status_code == 201
    make_experiment("draft-in-layer", layer="checkout")
    make_experiment("gone")
    assert client.post("/v1/experiments/gone/archive", headers=admin).status_code == 200
    make_experiment("live", start=True)
    config = _config(client, sdk).json()
    assert set(config["experiments"]) == {"live"}
    assert set(config["layers"]) == {"checkout"}
    assert validate_config(config) == []
    # The server still answers a draft named by key: the control, not running (as before).
    named = client.post(
        "/v1/assign", json={"unit_id": "u", "experiments": ["draft-in-layer"]}, headers=sdk
    ).json()["assignments"][0]
    assert (named["variant"], named["reason"]) == ("control", "not_running")


def test_a_new_phase_changes_the_variants_and_the_phase(
    client: Any, admin: dict[str, str], sdk: dict[str, str], make_experiment: Any
) -> None:
    make_experiment("phased", start=True)
    body = {
        "variants": [
            {"key": "control", "weight": 0.2, "is_control": True},
            {"key": "treatment", "weight": 0.8},
        ],
        "reason": "ramp the treatment",
    }
    assert client.post("/v1/experiments/phased/phases", json=body, headers=admin).status_code == 201
    exp = _config(client, sdk).json()["experiments"]["phased"]
    assert exp["phase"] == 2
    assert [v["weight"] for v in exp["variants"]] == [0.2, 0.8]


def test_etag_is_strong_and_if_none_match_gets_304_without_a_body(
    client: Any, sdk: dict[str, str], make_experiment: Any
) -> None:
    make_experiment("etagged", start=True)
    first = _config(client, sdk)
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    again = _config(client, sdk)
    assert again.headers["etag"] == etag and again.content == first.content
    for header in (etag, f'"nope", {etag}', f"W/{etag}", "*"):
        r = client.get("/v1/sdk/config", headers=sdk | {"If-None-Match": header})
        assert r.status_code == 304, header
        assert r.content == b""
        assert r.headers["etag"] == etag
    r = client.get("/v1/sdk/config", headers=sdk | {"If-None-Match": '"stale"'})
    assert r.status_code == 200 and r.content == first.content


def test_every_change_that_alters_assignment_changes_the_etag(
    client: Any, admin: dict[str, str], sdk: dict[str, str], make_experiment: Any
) -> None:
    make_experiment("moving", start=True)
    seen = [_config(client, sdk).headers["etag"]]

    def changed(r: Any) -> None:
        assert r.status_code == 200, r.text
        etag = _config(client, sdk).headers["etag"]
        assert etag != seen[-1]
        seen.append(etag)

    changed(client.patch("/v1/experiments/moving", json={"traffic_fraction": 0.3}, headers=admin))
    changed(
        client.patch("/v1/experiments/moving", json={"overrides": {"u1": "control"}}, headers=admin)
    )
    changed(client.post("/v1/experiments/moving/pause", headers=admin))
    changed(client.post("/v1/experiments/moving/resume", headers=admin))
    assert seen[-1] == seen[-3]  # same content as before the pause: same ETag
    changed(client.post("/v1/experiments/moving/stop", headers=admin))
    # A layer's holdout (layers with only drafts may still change it).
    assert client.post("/v1/layers", json={"key": "lay"}, headers=admin).status_code == 201
    seen.append(_config(client, sdk).headers["etag"])
    changed(client.patch("/v1/layers/lay", json={"holdout_fraction": 0.1}, headers=admin))


def test_two_processes_each_with_its_cache_see_a_change_made_through_the_other(
    engine: Any, client: Any, admin: dict[str, str], make_experiment: Any
) -> None:
    from service.assignment.service import ConfigCache
    from service.db import open_session

    a, b = ConfigCache(), ConfigCache()
    make_experiment("shared", start=True)

    def status_seen(cache: ConfigCache) -> str:
        with open_session() as session:
            return str(cache.get(session).config["experiments"]["shared"]["status"])

    assert status_seen(a) == status_seen(b) == "running"
    builds = (a.builds, b.builds)
    assert status_seen(a) == "running" and (a.builds, b.builds) == builds  # cached
    assert client.post("/v1/experiments/shared/pause", headers=admin).status_code == 200
    assert status_seen(a) == status_seen(b) == "paused"
    assert (a.builds, b.builds) == (builds[0] + 1, builds[1] + 1)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/sdk/config", None),
        ("POST", "/v1/assign", {"unit_id": "u1"}),
        ("POST", "/ofrep/v1/evaluate/flags/some-flag", {"context": {"targetingKey": "u1"}}),
        ("POST", "/ofrep/v1/evaluate/flags", {"context": {"targetingKey": "u1"}}),
        ("GET", "/ofrep/v1/configuration", None),
    ],
)
def test_role_matrix(
    client: Any, keys: dict[str, dict[str, str]], method: str, path: str, body: Any
) -> None:
    def call(headers: dict[str, str]) -> Any:
        return client.request(method, path, json=body, headers=headers)

    r = call({})
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert call({"Authorization": "Bearer tb_wrong"}).status_code == 401
    for role in ("viewer", "editor"):
        r = call(keys[role])
        assert r.status_code == 403, role
        assert r.json()["code"] == "forbidden"
    for role in ("sdk", "admin"):
        r = call(keys[role])
        assert r.status_code in (200, 404), (role, r.text)  # 404: OFREP's unknown flag
