"""A long results call must not block other requests (reads or event writes)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest


def test_other_requests_are_served_while_results_run(
    client: Any,
    keys: dict[str, dict[str, str]],
    make_experiment: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from service.analysis.aggregate import StoreAggregator

    make_experiment("slow-one", start=True)
    ts = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
    first = {
        "event_id": "e-1",
        "type": "exposure",
        "experiment": "slow-one",
        "variant": "control",
        "unit_id": "u-1",
        "timestamp": ts,
    }
    assert (
        client.post("/v1/events", json={"events": [first]}, headers=keys["sdk"]).status_code == 200
    )

    entered, release = threading.Event(), threading.Event()
    real = StoreAggregator.variant_sums

    def slow(*args: Any, **kwargs: Any) -> Any:
        # the read transaction is open (count_exposures ran): hold it like a heavy query would
        entered.set()
        assert release.wait(30), "the concurrent requests never finished"
        return real(*args, **kwargs)

    # the built-in store's aggregation (the analysis reads it through an Aggregator)
    monkeypatch.setattr(StoreAggregator, "variant_sums", slow)
    out: dict[str, Any] = {}

    def heavy() -> None:
        out["results"] = client.get("/v1/experiments/slow-one/results", headers=keys["viewer"])

    worker = threading.Thread(target=heavy)
    worker.start()
    try:
        assert entered.wait(30)
        got: dict[str, Any] = {}

        def others() -> None:
            got["read"] = client.get("/v1/experiments/slow-one", headers=keys["viewer"])
            second = first | {"event_id": "e-2", "unit_id": "u-2", "variant": "treatment"}
            got["write"] = client.post("/v1/events", json={"events": [second]}, headers=keys["sdk"])

        side = threading.Thread(target=others)
        side.start()
        side.join(20)
        assert not side.is_alive(), "a request was blocked by the running results call"
        assert got["read"].status_code == 200
        assert got["write"].status_code == 200 and got["write"].json()["accepted"] == 1
    finally:
        release.set()
        worker.join(30)
    assert out["results"].status_code == 200
    assert out["results"].json()["srm"]["observed"]["control"] == 1
