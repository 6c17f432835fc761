"""OFREP endpoints: protocol shapes through TestClient, then the real OpenFeature Python SDK and
its OFREP provider (from PyPI) against a live uvicorn server started here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.support.live import LiveServer, migrate


def _eval(client: Any, headers: dict[str, str], key: str, body: Any) -> Any:
    return client.post(f"/ofrep/v1/evaluate/flags/{key}", json=body, headers=headers)


def test_single_evaluation_maps_reasons_and_values(
    client: Any, admin: dict[str, str], sdk: dict[str, str], make_experiment: Any
) -> None:
    make_experiment("flag-exp", start=True, overrides={"qa": "treatment"})
    r = _eval(client, sdk, "flag-exp", {"context": {"targetingKey": "unit-7", "country": "FR"}})
    assert r.status_code == 200
    body = r.json()
    assigned = client.post(
        "/v1/assign", json={"unit_id": "unit-7", "experiments": ["flag-exp"]}, headers=sdk
    ).json()["assignments"][0]
    assert body == {
        "key": "flag-exp",
        "value": assigned["variant"],
        "variant": assigned["variant"],
        "reason": "SPLIT",
        "metadata": {"in_experiment": True, "reason": "split", "phase": 1},
    }
    forced = _eval(client, sdk, "flag-exp", {"context": {"targetingKey": "qa"}}).json()
    assert (forced["value"], forced["reason"]) == ("treatment", "TARGETING_MATCH")
    assert forced["metadata"]["in_experiment"] is False
    assert client.post("/v1/experiments/flag-exp/pause", headers=admin).status_code == 200
    paused = _eval(client, sdk, "flag-exp", {"context": {"targetingKey": "unit-7"}}).json()
    assert (paused["value"], paused["variant"], paused["reason"]) == (
        "control",
        "control",
        "DISABLED",
    )


def test_not_in_experiment_is_default_with_the_control(
    client: Any, sdk: dict[str, str], make_experiment: Any
) -> None:
    fr_only = {"attribute": "country", "op": "eq", "value": "FR"}
    make_experiment("fr-only", start=True, targeting=fr_only)
    body = _eval(client, sdk, "fr-only", {"context": {"targetingKey": "u", "country": "DE"}}).json()
    assert (body["value"], body["reason"], body["metadata"]["reason"]) == (
        "control",
        "DEFAULT",
        "not_targeted",
    )


def test_single_evaluation_errors_use_the_ofrep_shapes(
    client: Any, sdk: dict[str, str], make_experiment: Any
) -> None:
    make_experiment("known-flag", start=True)
    r = _eval(client, sdk, "missing-flag", {"context": {"targetingKey": "u"}})
    assert r.status_code == 404
    assert r.json()["key"] == "missing-flag" and r.json()["errorCode"] == "FLAG_NOT_FOUND"
    assert r.json()["errorDetails"]
    cases = [
        ({"context": {"country": "FR"}}, "TARGETING_KEY_MISSING"),
        ({}, "TARGETING_KEY_MISSING"),
        ({"context": {"targetingKey": ""}}, "TARGETING_KEY_MISSING"),
        ({"context": {"targetingKey": 12}}, "INVALID_CONTEXT"),
        ({"context": "u"}, "INVALID_CONTEXT"),
        ([1, 2], "INVALID_CONTEXT"),
    ]
    for body, code in cases:
        r = _eval(client, sdk, "known-flag", body)
        assert r.status_code == 400, body
        assert r.headers["content-type"] == "application/json"
        assert r.json()["key"] == "known-flag" and r.json()["errorCode"] == code, body
        assert isinstance(r.json()["errorDetails"], str)
    r = client.post(
        "/ofrep/v1/evaluate/flags/known-flag",
        content=b"{not json",
        headers=sdk | {"Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["errorCode"] == "PARSE_ERROR"


def test_bulk_evaluates_every_experiment_with_etag_and_304(
    client: Any, admin: dict[str, str], sdk: dict[str, str], make_experiment: Any
) -> None:
    make_experiment("bulk-b", start=True)
    make_experiment("bulk-a")
    ctx = {"context": {"targetingKey": "unit-1"}}
    r = client.post("/ofrep/v1/evaluate/flags", json=ctx, headers=sdk)
    assert r.status_code == 200
    flags = r.json()["flags"]
    assert [f["key"] for f in flags] == ["bulk-b"]  # bulk-a is a draft: never listed
    assert flags[0]["reason"] == "SPLIT"
    etag = r.headers["etag"]
    again = client.post("/ofrep/v1/evaluate/flags", json=ctx, headers=sdk | {"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    # The ETag is that of the evaluated flags: another unit matches it iff its flags are equal.
    other_ctx = {"context": {"targetingKey": "unit-2"}}
    fresh = client.post("/ofrep/v1/evaluate/flags", json=other_ctx, headers=sdk)
    other = client.post(
        "/ofrep/v1/evaluate/flags", json=other_ctx, headers=sdk | {"If-None-Match": etag}
    )
    assert other.status_code == (304 if fresh.json()["flags"] == flags else 200)
    assert client.post("/v1/experiments/bulk-b/pause", headers=admin).status_code == 200
    stale = sdk | {"If-None-Match": etag}
    changed = client.post("/ofrep/v1/evaluate/flags", json=ctx, headers=stale)
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    bad = client.post("/ofrep/v1/evaluate/flags", json={"context": {}}, headers=sdk)
    assert bad.status_code == 400
    assert bad.json()["errorCode"] == "TARGETING_KEY_MISSING" and "key" not in bad.json()


def _exposure_rows(engine: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT x.event_id, e.key, x.unit_id, x.variant, x.phase FROM exposure AS x "
                "JOIN experiment AS e ON e.id = x.experiment_id"
            )
        ).all()
    return sorted(tuple(r) for r in rows)


def test_single_evaluation_logs_the_exposure_once_and_bulk_logs_none(
    client: Any, admin: dict[str, str], sdk: dict[str, str], make_experiment: Any, engine: Any
) -> None:
    from service.assignment.service import exposure_event_id

    make_experiment("seen", start=True, overrides={"qa": "treatment"})
    make_experiment("also-seen", start=True)
    ctx = {"context": {"targetingKey": "unit-9"}}
    # Bulk evaluates flags the unit may never see: nothing is logged.
    assert client.post("/ofrep/v1/evaluate/flags", json=ctx, headers=sdk).status_code == 200
    assert _exposure_rows(engine) == []
    first = _eval(client, sdk, "seen", ctx).json()
    again = _eval(client, sdk, "seen", ctx).json()
    assert first == again and first["reason"] == "SPLIT"
    row = (exposure_event_id("seen", 1, "unit-9", first["variant"]), "seen", "unit-9")
    assert _exposure_rows(engine) == [(*row, first["variant"], 1)]
    # The same id /v1/assign with log_exposure gives it: still one row.
    assigned = client.post(
        "/v1/assign",
        json={"unit_id": "unit-9", "experiments": ["seen"], "log_exposure": True},
        headers=sdk,
    )
    assert assigned.status_code == 200
    assert _exposure_rows(engine) == [(*row, first["variant"], 1)]
    # An override, a paused experiment, an unknown flag: the unit is not analysed, not logged.
    assert _eval(client, sdk, "seen", {"context": {"targetingKey": "qa"}}).json()["reason"] == (
        "TARGETING_MATCH"
    )
    assert client.post("/v1/experiments/also-seen/pause", headers=admin).status_code == 200
    assert _eval(client, sdk, "also-seen", ctx).json()["reason"] == "DISABLED"
    assert _eval(client, sdk, "nope", ctx).status_code == 404
    assert len(_exposure_rows(engine)) == 1


def test_configuration_endpoint(client: Any, sdk: dict[str, str]) -> None:
    r = client.get("/ofrep/v1/configuration", headers=sdk)
    assert r.status_code == 200
    assert r.json()["capabilities"]["flagEvaluation"]["supportedTypes"] == ["string"]


# --------------------------------------------------------------------------- live server + SDK


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A uvicorn process (1 worker) on a free port over a freshly migrated SQLite file."""
    if "postgres" in os.environ.get("TRIALBOOK_TEST_DATABASE_URL", ""):
        pytest.skip("the live server runs on its own SQLite file")
    tmp = tmp_path_factory.mktemp("ofrep")
    admin_key = "tb_live_admin_key_for_the_ofrep_test"
    url = f"sqlite:///{tmp / 'live.db'}"
    migrate(url)
    with LiveServer(database_url=url, log=tmp / "server.log", bootstrap_admin_key=admin_key) as srv:
        yield srv.url, admin_key


def test_openfeature_sdk_with_the_ofrep_provider_evaluates_experiments(
    live_server: tuple[str, str], bodies: Any
) -> None:
    from openfeature import api
    from openfeature.contrib.provider.ofrep import OFREPProvider
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.exception import ErrorCode
    from openfeature.flag_evaluation import Reason

    base, admin_key = live_server
    admin = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=base, headers=admin, timeout=10) as http:
        assert http.post("/v1/metrics", json=bodies.metric()).status_code == 201
        body = bodies.experiment("of-checkout", overrides={"qa-user": "treatment"})
        assert http.post("/v1/experiments", json=body).status_code == 201
        assert http.post("/v1/experiments/of-checkout/start").status_code == 200
        created = http.post("/v1/keys", json={"name": "ofrep", "role": "sdk"})
        assert created.status_code == 201
        sdk_key = created.json()["key"]
        sdk = {"Authorization": f"Bearer {sdk_key}"}
        units = [f"user-{i}" for i in range(40)]
        server = {
            u: http.post("/v1/assign", json={"unit_id": u}, headers=sdk).json()["assignments"][0]
            for u in units
        }

        api.set_provider(
            OFREPProvider(base, headers_factory=lambda: {"Authorization": f"Bearer {sdk_key}"}),
            domain="trialbook-test",
        )
        try:
            client = api.get_client(domain="trialbook-test")
            for unit in units:
                details = client.get_string_details(
                    "of-checkout", "fallback", EvaluationContext(targeting_key=unit)
                )
                assert details.error_code is None, details.error_message
                assert details.value == details.variant == server[unit]["variant"]
                assert details.reason == Reason.SPLIT
                assert details.flag_metadata["reason"] == "split"
                assert details.flag_metadata["in_experiment"] is True
            assert {server[u]["variant"] for u in units} == {"control", "treatment"}

            forced = client.get_string_details(
                "of-checkout", "fallback", EvaluationContext(targeting_key="qa-user")
            )
            assert (forced.value, forced.reason) == ("treatment", Reason.TARGETING_MATCH)

            missing = client.get_string_details(
                "no-such-flag", "fallback", EvaluationContext(targeting_key="u")
            )
            assert (missing.value, missing.error_code) == ("fallback", ErrorCode.FLAG_NOT_FOUND)

            no_key = client.get_string_details("of-checkout", "fallback", EvaluationContext())
            assert (no_key.value, no_key.error_code) == (
                "fallback",
                ErrorCode.TARGETING_KEY_MISSING,
            )

            assert http.post("/v1/experiments/of-checkout/pause").status_code == 200
            paused = client.get_string_details(
                "of-checkout", "fallback", EvaluationContext(targeting_key="user-1")
            )
            assert (paused.value, paused.reason) == ("control", Reason.DISABLED)

            api.set_provider(
                OFREPProvider(base, headers_factory=lambda: {"Authorization": "Bearer tb_bad"}),
                domain="trialbook-test",
            )
            denied = client.get_string_details(
                "of-checkout", "fallback", EvaluationContext(targeting_key="u")
            )
            assert (denied.value, denied.error_code) == ("fallback", ErrorCode.GENERAL)
        finally:
            api.clear_providers()


def test_openfeature_evaluations_show_up_as_exposures_in_the_results(
    live_server: tuple[str, str], bodies: Any
) -> None:
    """400 units evaluated by an OpenFeature client: 400 exposed units in the results (issue 17)."""
    from openfeature import api
    from openfeature.contrib.provider.ofrep import OFREPProvider
    from openfeature.evaluation_context import EvaluationContext

    base, admin_key = live_server
    admin = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=base, headers=admin, timeout=10) as http:
        if http.get("/v1/metrics/conversion").status_code == 404:
            assert http.post("/v1/metrics", json=bodies.metric()).status_code == 201
        body = bodies.experiment("of-exposed")
        assert http.post("/v1/experiments", json=body).status_code == 201
        assert http.post("/v1/experiments/of-exposed/start").status_code == 200
        created = http.post("/v1/keys", json={"name": "ofrep-exposures", "role": "sdk"})
        assert created.status_code == 201
        sdk_key = created.json()["key"]

        api.set_provider(
            OFREPProvider(base, headers_factory=lambda: {"Authorization": f"Bearer {sdk_key}"}),
            domain="trialbook-exposures",
        )
        try:
            client = api.get_client(domain="trialbook-exposures")
            seen: dict[str, str] = {}
            for i in range(400):
                unit = f"of-unit-{i}"
                details = client.get_string_details(
                    "of-exposed", "fallback", EvaluationContext(targeting_key=unit)
                )
                assert details.error_code is None, details.error_message
                seen[unit] = details.value
            for i in range(0, 400, 7):  # evaluated again: deduplicated, not counted twice
                details = client.get_string_details(
                    "of-exposed", "fallback", EvaluationContext(targeting_key=f"of-unit-{i}")
                )
                assert details.value == seen[f"of-unit-{i}"]
        finally:
            api.clear_providers()

        results = http.get("/v1/experiments/of-exposed/results")
        assert results.status_code == 200, results.text
        got = results.json()
        per_variant = {v: list(seen.values()).count(v) for v in set(seen.values())}
        assert set(per_variant) == {"control", "treatment"}
        assert got["srm"]["observed"] == per_variant
        assert sum(got["srm"]["observed"].values()) == got["units"] == 400
        assert got["multiple_exposures"] == 0 and "no_exposures" not in got["warnings"]
