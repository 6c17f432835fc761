"""The OpenFeature provider through the real ``openfeature-sdk`` client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sdk_helpers import make_config, make_experiment

pytest.importorskip("openfeature")

from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from openfeature.track import TrackingEventDetails
from trialbook.assignment import compile_config
from trialbook.openfeature import TrialbookProvider
from trialbook.testing import FakeClient

CONFIG = make_config(
    make_experiment("exp", overrides={"qa": "treatment"}),
    make_experiment("paused", status="paused"),
    make_experiment("fr-only", targeting={"attribute": "country", "op": "eq", "value": "FR"}),
)


@pytest.fixture
def fake() -> FakeClient:
    return FakeClient(config=CONFIG)


@pytest.fixture
def flags(fake: FakeClient) -> Iterator[OpenFeatureClient]:
    api.set_provider(TrialbookProvider(fake), domain="trialbook-tests")
    yield api.get_client("trialbook-tests")
    api.shutdown()


def test_a_split_resolves_to_the_variant_and_logs_one_exposure(
    flags: OpenFeatureClient, fake: FakeClient
) -> None:
    expected = compile_config(CONFIG).evaluate("exp", "user-7").variant
    details = flags.get_string_details("exp", "fallback", EvaluationContext("user-7"))
    assert details.value == expected and details.variant == expected
    assert details.reason == Reason.SPLIT and details.error_code is None
    assert details.flag_metadata["trialbook_reason"] == "split"
    flags.get_string_value("exp", "fallback", EvaluationContext("user-7"))
    assert [(e["unit_id"], e["variant"]) for e in fake.exposures] == [("user-7", expected)]


def test_reasons_map_to_openfeature_reasons(flags: OpenFeatureClient) -> None:
    override = flags.get_string_details("exp", "fb", EvaluationContext("qa"))
    assert (override.value, override.reason) == ("treatment", Reason.TARGETING_MATCH)
    paused = flags.get_string_details("paused", "fb", EvaluationContext("u"))
    assert (paused.value, paused.reason) == ("control", Reason.DISABLED)
    excluded = flags.get_string_details("fr-only", "fb", EvaluationContext("u", {"country": "DE"}))
    assert (excluded.value, excluded.reason) == ("control", Reason.DEFAULT)
    targeted = flags.get_string_details("fr-only", "fb", EvaluationContext("u", {"country": "FR"}))
    assert targeted.reason == Reason.SPLIT


def test_errors_return_the_default_with_an_openfeature_error_code(
    flags: OpenFeatureClient,
) -> None:
    missing = flags.get_string_details("nope", "fb", EvaluationContext("u"))
    assert (missing.value, missing.reason, missing.error_code) == (
        "fb",
        Reason.ERROR,
        ErrorCode.FLAG_NOT_FOUND,
    )
    no_key = flags.get_string_details("exp", "fb", EvaluationContext())
    assert (no_key.value, no_key.error_code) == ("fb", ErrorCode.TARGETING_KEY_MISSING)
    wrong_type = flags.get_boolean_details("exp", False, EvaluationContext("u"))
    assert (wrong_type.value, wrong_type.error_code) == (False, ErrorCode.TYPE_MISMATCH)


def test_no_config_is_provider_not_ready() -> None:
    from trialbook import Client

    client = Client(None, None)  # offline, no config
    api.set_provider(TrialbookProvider(client), domain="not-ready")
    details = api.get_client("not-ready").get_string_details("exp", "fb", EvaluationContext("u"))
    assert (details.value, details.error_code) == ("fb", ErrorCode.PROVIDER_NOT_READY)
    api.shutdown()
    client.close()


def test_track_records_a_conversion(flags: OpenFeatureClient, fake: FakeClient) -> None:
    flags.track("purchase", EvaluationContext("user-7"), TrackingEventDetails(value=12.5))
    flags.track("ignored", EvaluationContext())
    assert [(c["name"], c["unit_id"], c["value"]) for c in fake.conversions] == [
        ("purchase", "user-7", 12.5)
    ]
