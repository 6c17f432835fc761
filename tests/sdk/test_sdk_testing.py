"""The in-memory double users put in their own tests."""

from __future__ import annotations

from sdk_helpers import BASE_CONFIG
from trialbook import Reason
from trialbook.client import ClientLike
from trialbook.testing import FakeClient


def checkout_button(client: ClientLike, user_id: str) -> str:
    """Code under test in a user's application."""
    variant = client.assign("new-checkout", user_id).variant
    client.track("render", user_id)
    return "green" if variant == "treatment" else "grey"


def test_fixed_assignments_for_everyone_and_for_one_unit() -> None:
    client = FakeClient({"new-checkout": "treatment", "other": {"u2": "b"}})
    assert checkout_button(client, "u1") == "green"
    assert client.assign("other", "u2").variant == "b"
    assert client.assign("other", "u3").reason is Reason.UNKNOWN_EXPERIMENT
    client.set_assignment("new-checkout", "control", unit_id="u9")
    assert checkout_button(client, "u9") == "grey"


def test_recorded_events_have_the_wire_shape_and_exposures_are_deduplicated() -> None:
    client = FakeClient({"new-checkout": "treatment"})
    for _ in range(3):
        checkout_button(client, "u1")
    assert len(client.exposures) == 1
    assert client.exposures[0]["type"] == "exposure"
    assert client.exposures[0]["variant"] == "treatment"
    assert [c["name"] for c in client.conversions] == ["render"] * 3
    assert client.conversions[0]["timestamp"].endswith("Z")
    client.track("bad", "u1", value=float("inf"))
    assert len(client.conversions) == 3
    client.reset()
    assert client.exposures == [] and client.conversions == []


def test_a_real_config_is_evaluated_like_the_client() -> None:
    with FakeClient(config=BASE_CONFIG) as client:
        assert client.assign("new-checkout", "qa-user-1").reason is Reason.OVERRIDE
        assert client.assign("new-checkout", "u1").reason is Reason.SPLIT
        assert client.flush() and client.wait_until_ready()
    assert client.closed
