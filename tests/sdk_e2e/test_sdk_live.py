"""The SDK against a live server: stored counts equal what the SDK sent, and the SDK assigns every
unit exactly as ``POST /v1/assign`` does; the OpenFeature provider through ``openfeature-sdk``.

The server runs in a subprocess (``python -m service.cli serve``) on its own SQLite file, also when
``TRIALBOOK_TEST_DATABASE_URL`` points the rest of the suite at PostgreSQL (see ``conftest.py``).
The expected numbers are not constants: they are what the SDK reported it sent, counted in the test,
compared with the rows the server stored (read with :mod:`sqlite3`) and with the server's own
assignment endpoint.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from live_server import BANNER, CHECKOUT, CHECKOUT_OVERRIDES, PAUSED, Provisioned
from trialbook import Assignment, Client, DropStats

pytestmark = pytest.mark.slow

N_UNITS = 10_000
N_CONVERSIONS = 30_000
# 8 in 10 units carry a targeted country, one a non-targeted one, one no attribute at all.
COUNTRIES: list[str | None] = ["FR", "DE", "ES", "FR", "DE", "ES", "FR", "DE", "US", None]


def unit(i: int) -> str:
    return f"unit-{i:05d}"


def attributes(i: int) -> dict[str, Any] | None:
    country = COUNTRIES[i % len(COUNTRIES)]
    return None if country is None else {"country": country}


def conversion_value(j: int) -> float | None:
    """Every third conversion has no value (the server stores 1); the others multiples of 0.25."""
    return None if j % 3 == 0 else (j % 89) * 0.25


@pytest.fixture
def sdk_client(live: Provisioned) -> Iterator[Client]:
    # timeout: a slow answer on a loaded machine must not turn into a retry (and a duplicate).
    client = Client(
        live.server.url, live.sdk_key, flush_interval=0.2, refresh_interval=60, timeout=60
    )
    try:
        assert client.wait_until_ready(15), "the SDK never got its config"
        yield client
    finally:
        client.close(timeout=30)


def server_assignments(
    live: Provisioned, requests: list[dict[str, Any]]
) -> list[list[dict[str, Any]]]:
    """``POST /v1/assign`` once per request body, over one keep-alive connection."""
    out = []
    with httpx.Client(base_url=live.server.url, headers=live.sdk_headers, timeout=30) as http:
        for body in requests:
            r = http.post("/v1/assign", json=body)
            assert r.status_code == 200, r.text
            out.append(r.json()["assignments"])
    return out


def as_wire(a: Assignment) -> dict[str, Any]:
    return {
        "experiment": a.experiment,
        "variant": a.variant,
        "in_experiment": a.in_experiment,
        "reason": a.reason.value,
    }


def test_the_server_stores_exactly_what_the_sdk_sent_and_assigns_every_unit_alike(
    live: Provisioned, sdk_client: Client
) -> None:
    client = sdk_client
    srv = live.server
    sdk: dict[str, list[Assignment]] = {}
    for i in range(N_UNITS):
        sdk[unit(i)] = [client.assign(exp, unit(i), attributes(i)) for exp in (CHECKOUT, PAUSED)]
    in_experiment = {u: a[0].variant for u, a in sdk.items() if a[0].in_experiment}
    per_variant = Counter(in_experiment.values())
    reasons = Counter(a[0].reason.value for a in sdk.values())
    # Every path of the assignment is exercised, not just the split.
    assert set(per_variant) == {"control", "blue", "green"}
    assert {"split", "not_targeted", "traffic_excluded", "override"} <= set(reasons), reasons
    assert all(a[1].reason.value == "not_running" and not a[1].in_experiment for a in sdk.values())

    expected_conversions: Counter[str] = Counter()
    expected_total = 0.0
    for j in range(N_CONVERSIONS):
        who = unit((j * 7919) % N_UNITS)  # 7919 is prime to 10,000: every unit converts 3 times
        value = conversion_value(j)
        client.track("purchase", who, value=value)
        expected_conversions[who] += 1
        expected_total += 1.0 if value is None else value

    assert client.flush(timeout=120), (client.stats(), srv.log_tail())
    stats = client.stats()
    n_events = len(in_experiment) + N_CONVERSIONS
    assert stats.exposures_logged == len(in_experiment)
    assert stats.conversions_tracked == N_CONVERSIONS
    assert stats.queued == 0
    assert (stats.accepted, stats.events_sent) == (n_events, n_events), stats
    assert (stats.duplicates, stats.conflicts, stats.rejected) == (0, 0, 0), stats
    assert stats.dropped == DropStats(), stats

    exp_id = srv.experiment_id(CHECKOUT)
    exposures = srv.query(
        "SELECT unit_id, variant, phase, late FROM exposure WHERE experiment_id = ?", (exp_id,)
    )
    assert len(exposures) == len(in_experiment)
    assert {(u, v) for u, v, _, _ in exposures} == set(in_experiment.items())
    assert {(phase, late) for _, _, phase, late in exposures} == {(1, 0)}
    stored_per_variant = srv.query(
        "SELECT variant, COUNT(*) FROM exposure_unit WHERE experiment_id = ? GROUP BY variant",
        (exp_id,),
    )
    assert dict(stored_per_variant) == dict(per_variant)
    assert srv.query("SELECT COUNT(*) FROM exposure_unit WHERE multiple") == [(0,)]

    conversions = srv.query(
        "SELECT unit_id, COUNT(*), SUM(value) FROM conversion"
        " WHERE name = 'purchase' AND unit_id LIKE 'unit-%' GROUP BY unit_id"
    )
    assert sum(n for _, n, _ in conversions) == N_CONVERSIONS
    assert {u: n for u, n, _ in conversions} == dict(expected_conversions)
    # Values are multiples of 0.25, so both sums are exact; isclose only guards the summing order.
    assert math.isclose(sum(s for _, _, s in conversions), expected_total, rel_tol=1e-12)

    # Assigning everyone again logs nothing new: one exposure per unit per process.
    for i in range(N_UNITS):
        client.assign(CHECKOUT, unit(i), attributes(i))
    assert client.stats().exposures_deduplicated == len(in_experiment)
    assert client.stats().exposures_logged == len(in_experiment)

    # Every unit, asked of the server: the same variant, membership and reason.
    bodies: list[dict[str, Any]] = []
    for i in range(N_UNITS):
        body: dict[str, Any] = {"unit_id": unit(i), "experiments": [CHECKOUT, PAUSED]}
        if attributes(i) is not None:
            body["attributes"] = attributes(i)
        bodies.append(body)
    answers = server_assignments(live, bodies)
    mismatches = [
        (unit(i), answer, [as_wire(a) for a in sdk[unit(i)]])
        for i, answer in enumerate(answers)
        if answer != [as_wire(a) for a in sdk[unit(i)]]
    ]
    assert mismatches == [], mismatches[:5]
    # /v1/assign without log_exposure stores nothing.
    assert srv.query("SELECT COUNT(*) FROM exposure WHERE experiment_id = ?", (exp_id,)) == [
        (len(in_experiment),)
    ]
    overridden = {u: sdk[u][0] for u in CHECKOUT_OVERRIDES}
    assert {u: (a.variant, a.reason.value) for u, a in overridden.items()} == {
        u: (v, "override") for u, v in CHECKOUT_OVERRIDES.items()
    }


# ------------------------------------------------------------------------------------ OpenFeature


def test_the_openfeature_provider_resolves_logs_and_tracks_against_the_live_server(
    live: Provisioned, sdk_client: Client
) -> None:
    pytest.importorskip("openfeature")
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.exception import ErrorCode
    from openfeature.flag_evaluation import Reason
    from openfeature.track import TrackingEventDetails
    from trialbook.openfeature import TrialbookProvider

    srv = live.server
    api.set_provider(TrialbookProvider(sdk_client), domain="trialbook-e2e")
    try:
        flags = api.get_client("trialbook-e2e")
        units = [f"of-{i:03d}" for i in range(200)]
        resolved = {}
        for u in units:
            details = flags.get_string_details(BANNER, "fallback", EvaluationContext(u))
            assert details.reason == Reason.SPLIT and details.error_code is None, details
            assert details.variant == details.value
            resolved[u] = details.value
            again = flags.get_string_value(BANNER, "fallback", EvaluationContext(u))
            assert again == details.value
        assert set(resolved.values()) == {"control", "treatment"}
        server = server_assignments(live, [{"unit_id": u, "experiments": [BANNER]} for u in units])
        assert {u: a[0]["variant"] for u, a in zip(units, server, strict=True)} == resolved
        assert all(a[0]["reason"] == "split" for a in server)

        override_unit = next(iter(CHECKOUT_OVERRIDES))
        override = flags.get_string_details(
            CHECKOUT, "fallback", EvaluationContext(override_unit, {"country": "FR"})
        )
        assert (override.value, override.reason) == (
            CHECKOUT_OVERRIDES[override_unit],
            Reason.TARGETING_MATCH,
        )
        excluded = flags.get_string_details(
            CHECKOUT, "fallback", EvaluationContext("of-us", {"country": "US"})
        )
        assert (excluded.value, excluded.reason) == ("control", Reason.DEFAULT)
        disabled = flags.get_string_details(PAUSED, "fallback", EvaluationContext("of-000"))
        assert (disabled.value, disabled.reason) == ("control", Reason.DISABLED)

        missing = flags.get_string_details("no-such-flag", "fallback", EvaluationContext("of-0"))
        assert (missing.value, missing.reason, missing.error_code) == (
            "fallback",
            Reason.ERROR,
            ErrorCode.FLAG_NOT_FOUND,
        )
        [unknown] = server_assignments(
            live, [{"unit_id": "of-0", "experiments": ["no-such-flag"]}]
        )[0]
        assert (unknown["variant"], unknown["reason"]) == (None, "unknown_experiment")

        flags.track("of-purchase", EvaluationContext("of-007"), TrackingEventDetails(value=12.5))
        flags.track("of-purchase", EvaluationContext("of-008"))
        assert sdk_client.flush(timeout=60), sdk_client.stats()
    finally:
        api.shutdown()

    tracked = srv.query(
        "SELECT unit_id, value FROM conversion WHERE name = 'of-purchase' ORDER BY unit_id"
    )
    assert tracked == [("of-007", 12.5), ("of-008", 1.0)]
    stored = srv.query(
        "SELECT unit_id, variant FROM exposure WHERE experiment_id = ?",
        (srv.experiment_id(BANNER),),
    )
    assert sorted(stored) == sorted(resolved.items())  # one exposure per unit, not two
    # Neither the override, the excluded unit nor the paused experiment logged an exposure.
    assert srv.query(
        "SELECT COUNT(*) FROM exposure WHERE unit_id IN (?, ?)", (override_unit, "of-us")
    ) == [(0,)]
    assert srv.query(
        "SELECT COUNT(*) FROM exposure WHERE experiment_id = ?", (srv.experiment_id(PAUSED),)
    ) == [(0,)]


# ------------------------------------------------------------------------------- config refresh


def test_the_config_refresh_gets_304_until_the_server_changes_then_the_new_config(
    own_live: Provisioned,
) -> None:
    srv = own_live.server
    with Client(srv.url, own_live.sdk_key, refresh_interval=600) as client:
        assert client.wait_until_ready(15)
        before = client.assign(BANNER, "refresh-1")
        assert before.reason.value == "split"
        assert client.refresh() is False  # If-None-Match with the ETag: 304
        assert (client.stats().config_fetches, client.stats().config_not_modified) == (1, 1)

        with httpx.Client(base_url=srv.url, headers=own_live.admin, timeout=30) as http:
            r = http.post(f"/v1/experiments/{BANNER}/pause")
            assert r.status_code == 200, r.text
        assert client.refresh() is True
        after = client.assign(BANNER, "refresh-1")
        assert (after.variant, after.reason.value) == ("control", "not_running")
        [answer] = server_assignments(
            own_live, [{"unit_id": "refresh-1", "experiments": [BANNER]}]
        )[0]
        assert answer == as_wire(after)
        assert client.refresh() is False
        stats = client.stats()
        assert (stats.config_fetches, stats.config_not_modified, stats.config_errors) == (2, 2, 0)
