"""Results snapshots (product.md §12): stored refreshes equal the live analysis, are served until
the next refresh, one refresh per experiment at a time, a consistent cut while events arrive."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sqlalchemy import func
from sqlmodel import select

from service.db import open_session, utcnow

KEY = "snap-checkout"
VARIANTS = [
    {"key": "control", "weight": 0.5, "is_control": True},
    {"key": "b", "weight": 0.5},
]
VOLATILE = {"computed_at", "snapshot_id", "data_until", "slices", "status"}


def _setup(client: Any, admin: dict[str, str], bodies: Any, make_metric: Any, **extra: Any) -> None:
    make_metric("conversion", "binomial", event="signup")
    make_metric("revenue", "mean", event="purchase", winsorize_upper=0.9)
    make_metric("aov", "ratio")
    body = bodies.experiment(
        KEY,
        variants=VARIANTS,
        secondary_metrics=["revenue", "aov"],
        overrides={"ov-1": "b"},
        analysis={"cuped": True, "pre_period_days": 7, "bayesian": True},
    )
    r = client.post("/v1/experiments", json=body | extra, headers=admin)
    assert r.status_code == 201, r.text
    assert client.post(f"/v1/experiments/{KEY}/start", headers=admin).status_code == 200


def _events(n: int, seed: int, prefix: str = "u") -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    now = utcnow()
    out: list[dict[str, Any]] = []
    for i in range(n):
        unit = f"{prefix}-{i}"
        v = "b" if rng.random() < 0.5 else "control"
        first = now - timedelta(hours=float(rng.uniform(1, 40)))
        out.append(
            {
                "event_id": f"x-{unit}",
                "type": "exposure",
                "experiment": KEY,
                "variant": v,
                "unit_id": unit,
                "timestamp": first.isoformat(),
            }
        )
        for name, lam in (("signup", 0.4), ("purchase", 1.0), ("aov_num", 1.0), ("aov_den", 1.0)):
            for k in range(int(rng.poisson(lam))):
                ts = first + timedelta(hours=float(rng.uniform(-100, 0.9)))
                out.append(
                    {
                        "event_id": f"c-{unit}-{name}-{k}",
                        "type": "conversion",
                        "name": name,
                        "unit_id": unit,
                        "value": float(rng.gamma(2.0, 10.0)) * (1.2 if v == "b" else 1.0),
                        "timestamp": ts.isoformat(),
                    }
                )
    if prefix != "u":
        return out
    out.append(
        {
            "event_id": "x-ov",
            "type": "exposure",
            "experiment": KEY,
            "variant": "b",
            "unit_id": "ov-1",
            "timestamp": now.isoformat(),
        }
    )
    return out


def _assert_same(a: Any, b: Any, path: str = "") -> None:
    """Equal structures; floats to 1e-12 (relative)."""
    if isinstance(a, dict):
        keys = set(a) - VOLATILE if not path else set(a)
        assert keys == (set(b) - VOLATILE if not path else set(b)), path
        for k in keys:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert_allclose(a, b, rtol=1e-12, atol=0, err_msg=path)
    else:
        assert a == b, path


def _live(key: str) -> dict[str, Any]:
    from service.analysis.service import compute_results

    session = open_session()
    try:
        return compute_results(session, key).model_dump(mode="json")
    finally:
        session.close()


def test_a_snapshot_equals_the_live_analysis_and_its_stored_statistics_reanalyse_to_it(
    client: Any, admin: dict[str, str], keys: Any, bodies: Any, make_metric: Any, ingest: Any
) -> None:
    from service.snapshots.service import reanalyse

    _setup(client, admin, bodies, make_metric)
    ingest(_events(300, 1))
    r = client.get(f"/v1/experiments/{KEY}/results", headers=keys["viewer"])
    assert r.status_code == 200, r.text
    snap = r.json()
    assert snap["snapshot_id"] >= 1 and snap["data_until"] is not None
    assert snap["units"] == 300
    _assert_same(snap, _live(KEY))
    session = open_session()
    try:
        again = reanalyse(session, snap["snapshot_id"]).model_dump(mode="json")
    finally:
        session.close()
    _assert_same(snap, again)
    # the stored sufficient statistics are the per-variant sums of §6
    from service.snapshots.models import ResultsSnapshot

    session = open_session()
    try:
        row = session.get(ResultsSnapshot, snap["snapshot_id"])
        assert row is not None and row.data is not None
        sums = row.data["sums"]["conversion"]
        assert {v: s["n"] for v, s in sums.items()} == snap["power"]["units_per_variant"]
        assert set(sums["b"]["sums"]) >= {"sum_x", "sum_x2", "sum_pre", "sum_pre2", "sum_x_pre"}
        # (and, for CUPED on a ratio, its pre-period sums: product.md §6)
        assert set(row.data["sums"]["aov"]["b"]["sums"]) >= {
            "sum_num",
            "sum_den",
            "sum_num2",
            "sum_den2",
            "sum_num_den",
        }
    finally:
        session.close()


def test_results_are_served_from_the_latest_snapshot_until_a_refresh(
    client: Any, admin: dict[str, str], keys: Any, bodies: Any, make_metric: Any, ingest: Any
) -> None:
    _setup(client, admin, bodies, make_metric)
    ingest(_events(100, 2))
    url = f"/v1/experiments/{KEY}/results"
    first = client.get(url, headers=keys["viewer"]).json()
    ingest(_events(50, 3, prefix="late"))
    same = client.get(url, headers=keys["viewer"]).json()
    assert same["snapshot_id"] == first["snapshot_id"] and same["units"] == 100

    r = client.post(f"{url}/refresh", headers=keys["editor"])
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["snapshot_id"] > first["snapshot_id"] and not accepted["already_running"]
    latest = client.get(url, headers=keys["viewer"]).json()
    assert latest["snapshot_id"] == accepted["snapshot_id"] and latest["units"] == 150
    _assert_same(latest, _live(KEY))

    listed = client.get(f"{url}/snapshots", headers=keys["viewer"]).json()["snapshots"]
    assert [s["snapshot_id"] for s in listed] == [accepted["snapshot_id"], first["snapshot_id"]]
    assert [s["trigger"] for s in listed] == ["manual", "read"]
    assert all(s["state"] == "ready" for s in listed)
    old = client.get(f"{url}?snapshot={first['snapshot_id']}", headers=keys["viewer"]).json()
    assert old["units"] == 100 and old["snapshot_id"] == first["snapshot_id"]


def test_results_are_served_from_the_stored_response_with_the_current_status_and_an_etag(
    client: Any, admin: dict[str, str], keys: Any, bodies: Any, make_metric: Any, ingest: Any
) -> None:
    from service.snapshots import service as snapshots
    from service.snapshots.models import ResultsSnapshot

    _setup(client, admin, bodies, make_metric, dimensions=["country"])
    events = _events(80, 4)
    for i, e in enumerate(events):
        if e["type"] == "exposure":
            e["attributes"] = {"country": ["se", "de", "fr"][i % 3]}
    ingest(events)
    url = f"/v1/experiments/{KEY}/results"
    stored = client.get(url, headers=keys["viewer"])
    assert stored.status_code == 200 and stored.headers["content-type"] == "application/json"
    body = stored.json()
    assert body["status"] == "running" and body["slices"]["dimensions"]
    assert stored.headers["etag"] == f'"snapshot-{body["snapshot_id"]}-running"'
    _assert_same(body, _live(KEY))

    # the same body as the model's own serialization (a snapshot stored without a response)
    session = open_session(write=True)
    try:
        row = session.get(ResultsSnapshot, body["snapshot_id"])
        assert row is not None and row.response is not None
        assert snapshots.STATUS_PLACEHOLDER not in stored.text
        row.response = None
        session.add(row)
        session.commit()
    finally:
        session.close()
    snapshots.forget_read_caches()  # or the read path's memo would serve the body it kept
    rendered = client.get(url, headers=keys["viewer"])
    assert rendered.content == stored.content
    assert rendered.headers["etag"] == stored.headers["etag"]
    by_id = client.get(f"{url}?snapshot={body['snapshot_id']}", headers=keys["viewer"])
    assert by_id.content == stored.content

    # a matching If-None-Match gets 304; pausing changes the label (and the tag), not the snapshot
    again = client.get(url, headers=keys["viewer"] | {"If-None-Match": stored.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert client.post(f"/v1/experiments/{KEY}/pause", headers=admin).status_code == 200
    paused = client.get(url, headers=keys["viewer"] | {"If-None-Match": stored.headers["etag"]})
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert paused.json()["snapshot_id"] == body["snapshot_id"]
    assert paused.headers["etag"] == f'"snapshot-{body["snapshot_id"]}-paused"'
    _assert_same(paused.json(), body)


def test_a_read_after_a_change_of_the_definition_gets_a_snapshot_of_the_new_one(
    client: Any, admin: dict[str, str], keys: Any, bodies: Any, make_metric: Any, ingest: Any
) -> None:
    """Reads in a row are answered from the read path's memo (service.snapshots.served_latest):
    a change of anything the fingerprint covers, a metric's name here, must still be seen."""
    from service.snapshots import service as snapshots

    _setup(client, admin, bodies, make_metric)
    ingest(_events(60, 7))
    url = f"/v1/experiments/{KEY}/results"
    first = client.get(url, headers=keys["viewer"])
    again = client.get(url, headers=keys["viewer"])
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    old_fp = _fingerprint(KEY)

    r = client.patch("/v1/metrics/revenue", json={"name": "Revenue (EUR)"}, headers=admin)
    assert r.status_code == 200, r.text
    assert _fingerprint(KEY) != old_fp
    changed = client.get(url, headers=keys["viewer"] | {"If-None-Match": first.headers["etag"]})
    assert changed.status_code == 200
    assert changed.json()["snapshot_id"] > first.json()["snapshot_id"]
    assert changed.headers["etag"] == f'"snapshot-{changed.json()["snapshot_id"]}-running"'
    assert changed.json()["units"] == first.json()["units"]  # the same data, a new snapshot
    # and the memo now serves the new one
    assert snapshots.served_latest(KEY) is not None
    assert client.get(url, headers=keys["viewer"]).content == changed.content
    # a refresh stored meanwhile is served at once
    accepted = client.post(f"{url}/refresh", headers=keys["editor"]).json()
    assert client.get(url, headers=keys["viewer"]).json()["snapshot_id"] == accepted["snapshot_id"]


def _fingerprint(key: str) -> str:
    from service.experiments.service import get_row
    from service.snapshots.service import fingerprint

    with open_session() as session:
        return fingerprint(session, get_row(session, key))


def test_snapshot_routes_refuse_bad_input_with_problems(
    client: Any, admin: dict[str, str], keys: Any, bodies: Any, make_metric: Any
) -> None:
    _setup(client, admin, bodies, make_metric)
    url = f"/v1/experiments/{KEY}/results"
    r = client.get(f"{url}?snapshot=999", headers=keys["viewer"])
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem")
    r = client.get(f"{url}?snapshot=0", headers=keys["viewer"])
    assert r.status_code == 422 and "snapshot" in r.text
    assert client.post(f"{url}/refresh", headers=keys["viewer"]).status_code == 403
    assert client.post("/v1/experiments/nope/results/refresh", headers=admin).status_code == 404
    assert client.get("/v1/experiments/nope/results/snapshots", headers=admin).status_code == 404


def test_only_one_refresh_of_an_experiment_runs_at_a_time(
    client: Any, admin: dict[str, str], bodies: Any, make_metric: Any, ingest: Any
) -> None:
    from service.snapshots import service as snapshots
    from service.snapshots.models import RefreshClaim

    _setup(client, admin, bodies, make_metric)
    ingest(_events(20, 4))
    got: list[tuple[Any, str | None]] = []
    barrier = threading.Barrier(6)

    def claim() -> None:
        barrier.wait(10)
        got.append(snapshots.request_refresh(KEY, "manual"))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    holders = [(a, t) for a, t in got if t is not None]
    assert len(got) == 6 and len(holders) == 1
    winner, token = holders[0]
    assert {a.snapshot_id for a, _ in got} == {winner.snapshot_id}
    assert sum(a.already_running for a, _ in got) == 5
    assert token is not None
    snapshots.run_refresh(winner.snapshot_id, token)
    session = open_session()
    try:
        assert session.exec(select(func.count()).select_from(RefreshClaim)).one() == 0
    finally:
        session.close()
    again, token2 = snapshots.request_refresh(KEY, "manual")
    assert token2 is not None and again.snapshot_id > winner.snapshot_id
    snapshots.run_refresh(again.snapshot_id, token2)


def test_a_stale_claim_of_a_dead_refresh_is_taken_over(
    client: Any, admin: dict[str, str], bodies: Any, make_metric: Any
) -> None:
    from service.snapshots import service as snapshots
    from service.snapshots.models import RefreshClaim

    _setup(client, admin, bodies, make_metric)
    first, token = snapshots.request_refresh(KEY, "manual")
    assert token is not None
    session = open_session(write=True)
    try:
        claim = session.exec(select(RefreshClaim)).one()
        claim.claimed_at = utcnow() - timedelta(seconds=snapshots.CLAIM_STALE_SECONDS + 1)
        session.add(claim)
        session.commit()
    finally:
        session.close()
    second, token2 = snapshots.request_refresh(KEY, "manual")
    assert token2 is not None and second.snapshot_id != first.snapshot_id


def test_a_refresh_racing_ingestion_sees_whole_batches_up_to_its_watermark(
    client: Any, admin: dict[str, str], bodies: Any, make_metric: Any
) -> None:
    from service.events.models import Exposure
    from service.events.service import ingest_body
    from service.snapshots import service as snapshots
    from service.snapshots.models import ResultsSnapshot

    _setup(client, admin, bodies, make_metric)
    batch, batches = 40, 40
    stop = threading.Event()

    def feed() -> None:
        now = utcnow()
        for b in range(batches):
            events: list[dict[str, Any]] = []
            for i in range(batch):
                unit = f"r-{b}-{i}"
                ts = (now - timedelta(minutes=30)).isoformat()
                events.append(
                    {
                        "event_id": f"x-{unit}",
                        "type": "exposure",
                        "experiment": KEY,
                        "variant": "b" if i % 2 else "control",
                        "unit_id": unit,
                        "timestamp": ts,
                    }
                )
                events.append(
                    {
                        "event_id": f"c-{unit}",
                        "type": "conversion",
                        "name": "signup",
                        "unit_id": unit,
                        "timestamp": (now - timedelta(minutes=20)).isoformat(),
                    }
                )
            result = ingest_body(json.dumps({"events": events}).encode())
            assert result.accepted == 2 * batch
        stop.set()

    feeder = threading.Thread(target=feed)
    feeder.start()
    ids = []
    while not stop.is_set() or len(ids) < 3:
        ids.append(snapshots.refresh_now(KEY, "manual"))
        if len(ids) > 200:
            break
    feeder.join(120)
    ids.append(snapshots.refresh_now(KEY, "manual"))
    session = open_session()
    try:
        seen = set()
        for snapshot_id in ids:
            row = session.get(ResultsSnapshot, snapshot_id)
            assert row is not None and row.state == "ready" and row.results is not None
            units = row.results["units"]
            seen.add(units)
            # every batch is in whole or not at all: its units and their conversions together
            assert units % batch == 0
            conv = row.data["sums"].get("conversion", {}) if row.data else {}
            assert sum(s["sums"]["sum_x"] for s in conv.values()) == units
            # and the watermark is that cut: the exposures stored up to it are the units seen
            upto = session.exec(
                select(func.count())
                .select_from(Exposure)
                .where(Exposure.id <= (row.exposure_watermark or 0))
            ).one()
            assert upto == units
        assert max(seen) == batch * batches
    finally:
        session.close()


def test_stopping_takes_a_snapshot_and_alerts_read_snapshots(
    client: Any, admin: dict[str, str], keys: Any, bodies: Any, make_metric: Any, ingest: Any
) -> None:
    from service.alerts.service import run_checks

    _setup(client, admin, bodies, make_metric)
    ingest(_events(60, 5))
    url = f"/v1/experiments/{KEY}/results"
    before = client.get(url, headers=keys["viewer"]).json()
    # a gross imbalance arrives: the alerts see it only once a refresh has run
    skew = [
        {
            "event_id": f"x-skew-{i}",
            "type": "exposure",
            "experiment": KEY,
            "variant": "b",
            "unit_id": f"skew-{i}",
            "timestamp": utcnow().isoformat(),
        }
        for i in range(400)
    ]
    ingest(skew)
    assert run_checks().raised == 0
    assert client.post(f"{url}/refresh", headers=admin).status_code == 202
    assert run_checks().experiments[0].raised == ["srm"]

    assert client.post(f"/v1/experiments/{KEY}/stop", headers=admin).status_code == 200
    listed = client.get(f"{url}/snapshots", headers=keys["viewer"]).json()["snapshots"]
    assert listed[0]["trigger"] in ("stop", "read") and listed[0]["units"] == 460
    after = client.get(url, headers=keys["viewer"]).json()
    assert after["snapshot_id"] == listed[0]["snapshot_id"] > before["snapshot_id"]
    assert after["status"] == "stopped"
    _assert_same(after, _live(KEY))


def test_the_scheduler_pass_refreshes_running_experiments_only(
    client: Any, admin: dict[str, str], bodies: Any, make_metric: Any, ingest: Any
) -> None:
    from service.snapshots.service import refresh_running

    _setup(client, admin, bodies, make_metric)
    r = client.post("/v1/experiments", json=bodies.experiment("snap-draft"), headers=admin)
    assert r.status_code == 201
    ingest(_events(10, 6))
    assert refresh_running() == 1
    listed = client.get(f"/v1/experiments/{KEY}/results/snapshots", headers=admin).json()
    assert [s["trigger"] for s in listed["snapshots"]] == ["schedule"]
    draft = client.get("/v1/experiments/snap-draft/results/snapshots", headers=admin).json()
    assert draft["snapshots"] == []


@pytest.mark.parametrize("interval", ["0", "3600"])
def test_the_refresh_scheduler_runs_in_the_app_unless_disabled(
    engine: Any, monkeypatch: Any, interval: str
) -> None:
    from fastapi.testclient import TestClient

    from service.config import get_settings
    from service.main import create_app

    monkeypatch.setenv("TRIALBOOK_REFRESH_INTERVAL_SECONDS", interval)
    get_settings.cache_clear()
    try:
        with TestClient(create_app()):
            names = {t.name for t in threading.enumerate()}
            assert ("results-refresh" in names) == (interval != "0")
    finally:
        get_settings.cache_clear()


# ---------------------------------------------------------------------------------- the series


def _backdate(key: str, started_at: Any) -> None:
    from service.experiments.models import Experiment, ExperimentPhase

    session = open_session(write=True)
    try:
        exp = session.exec(select(Experiment).where(Experiment.key == key)).one()
        exp.started_at = started_at
        for phase in session.exec(
            select(ExperimentPhase).where(ExperimentPhase.experiment_id == exp.id)
        ).all():
            phase.started_at = started_at
            session.add(phase)
        session.add(exp)
        session.commit()
    finally:
        session.close()


def _days_events(key: str, prefix: str, start: Any, hours: float, seed: int) -> list[Any]:
    """(timestamp, event) pairs: units first exposed over ``hours`` after ``start``."""
    rng = np.random.default_rng(seed)
    out: list[Any] = []
    for i in range(240):
        unit = f"{prefix}{i}"
        v = "b" if rng.random() < 0.5 else "control"
        first = start + timedelta(hours=float(rng.uniform(0, hours)))
        exposure = {"type": "exposure", "experiment": key, "variant": v, "unit_id": unit}
        out.append((first, exposure))
        if rng.random() < 0.3:  # a second exposure to the same arm a day later
            out.append((first + timedelta(hours=20), exposure))
        for name, lam in (("signup", 0.6), ("purchase", 1.5), ("aov_num", 1.0), ("aov_den", 1.0)):
            for _ in range(int(rng.poisson(lam))):
                ts = first + timedelta(hours=float(rng.uniform(-30, 60)))
                value = float(rng.gamma(2.0, 10.0)) * (1.25 if v == "b" else 1.0)
                out.append(
                    (ts, {"type": "conversion", "name": name, "unit_id": unit, "value": value})
                )
    return out


def _as_events(pairs: list[Any], cut: Any = None) -> list[dict[str, Any]]:
    now = utcnow()
    return [
        e | {"event_id": f"{e['unit_id']}-{k}", "timestamp": ts.isoformat()}
        for k, (ts, e) in enumerate(pairs)
        if ts < (cut or now) and ts < now
    ]


def _compare_point(point: dict[str, Any], live: dict[str, Any]) -> None:
    assert point["units"] == live["power"]["units_per_variant"]
    for pm, lm in zip(point["metrics"], live["metrics"], strict=True):
        assert pm["metric"] == lm["metric"]
        for pc, lc in zip(pm["comparisons"], lm["comparisons"], strict=True):
            for field in ("absolute", "relative", "p_value_adjusted", "sequential"):
                _assert_same(pc[field], lc[field], field)


def test_each_day_of_the_series_equals_an_analysis_of_the_data_cut_at_the_days_end(
    client: Any, admin: dict[str, str], keys: Any, bodies: Any, make_metric: Any, ingest: Any
) -> None:
    from service.snapshots.service import DAY

    sequential = {"method": "sequential", "cuped": True, "pre_period_days": 7}
    _setup(client, admin, bodies, make_metric, analysis=sequential)
    start = utcnow() - timedelta(days=3, hours=12)
    _backdate(KEY, start)
    pairs = _days_events(KEY, "s-", start, 80, 7)
    ingest(_as_events(pairs))
    r = client.get(f"/v1/experiments/{KEY}/results/timeseries", headers=keys["viewer"])
    assert r.status_code == 200, r.text
    series = r.json()
    assert series["method"] == "sequential"
    points = series["points"]
    assert [p["day"] for p in points] == [1, 2, 3, 4]
    assert [p["final"] for p in points] == [True, True, True, False]
    assert all(c["sequential"] is not None for p in points for c in p["metrics"][0]["comparisons"])
    # the last point is the snapshot's own analysis (data so far)
    _compare_point(points[-1], _live(KEY))
    # each finished day: an experiment of its own fed only the events before the day's end
    for p in points[:3]:
        cut = start + p["day"] * DAY
        key = f"cut-day-{p['day']}"
        body = bodies.experiment(
            key,
            variants=VARIANTS,
            secondary_metrics=["revenue", "aov"],
            overrides={"ov-1": "b"},
            analysis=sequential,
        )
        assert client.post("/v1/experiments", json=body, headers=admin).status_code == 201
        assert client.post(f"/v1/experiments/{key}/start", headers=admin).status_code == 200
        copy = [
            (
                ts,
                e
                | {"unit_id": f"d{p['day']}-{e['unit_id']}"}
                | ({"experiment": key} if e["type"] == "exposure" else {}),
            )
            for ts, e in pairs
        ]
        ingest(_as_events(copy, cut))
        _compare_point(p, _live(key))
        assert p["units"] and sum(p["units"].values()) > 0
    assert sum(points[0]["units"].values()) < sum(points[2]["units"].values())


def test_the_backfill_after_a_restart_gives_the_same_series_and_days_are_kept(
    client: Any, admin: dict[str, str], keys: Any, bodies: Any, make_metric: Any, ingest: Any
) -> None:
    from sqlalchemy import delete

    from service.snapshots.models import ResultsDay, ResultsSnapshot

    _setup(client, admin, bodies, make_metric)
    start = utcnow() - timedelta(days=13, hours=12)  # a 14-day experiment
    _backdate(KEY, start)
    ingest(_as_events(_days_events(KEY, "t-", start, 13 * 24, 8)))
    url = f"/v1/experiments/{KEY}/results/timeseries"
    first = client.get(url, headers=keys["viewer"]).json()
    assert len(first["points"]) == 14 and sum(p["final"] for p in first["points"]) == 13
    session = open_session()
    try:
        days = session.exec(select(ResultsDay)).all()
        kept = {d.day: d.computed_at for d in days}
    finally:
        session.close()
    assert sorted(kept) == list(range(1, 14))
    # a refresh reuses the finished days
    assert client.post(f"/v1/experiments/{KEY}/results/refresh", headers=admin).status_code == 202
    session = open_session()
    try:
        assert {d.day: d.computed_at for d in session.exec(select(ResultsDay)).all()} == kept
    finally:
        session.close()
    second = client.get(url, headers=keys["viewer"]).json()
    assert second["snapshot_id"] > first["snapshot_id"]
    _assert_same(second["points"], first["points"])
    # a server that never saw this experiment: nothing stored, the backfill computes it again
    session = open_session(write=True)
    try:
        session.exec(delete(ResultsDay))  # type: ignore[call-overload]
        session.exec(delete(ResultsSnapshot))  # type: ignore[call-overload]
        session.commit()
    finally:
        session.close()
    third = client.get(url, headers=keys["viewer"]).json()
    _assert_same(third["points"], first["points"])


# ---------------------------------------------------------------------------------- the slices

COUNTRIES = [f"c{k:02d}" for k in range(12)]  # 12 values: the 2 rarest go to `other`


def _sliced_events(seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    now = utcnow()
    out: list[dict[str, Any]] = []
    for i in range(600):
        unit = f"s-{i}"
        v = "b" if i % 2 else "control"
        # country k with weight 12 - k (c00 most frequent); every 9th unit has none
        k = int(rng.choice(12, p=np.arange(12, 0, -1) / 78))
        attributes: dict[str, Any] = {"pro": bool(i % 3 == 0), "ignored": "x"}
        if i % 9:
            attributes["country"] = COUNTRIES[k]
        first = now - timedelta(hours=float(rng.uniform(2, 30)))
        out.append(
            {
                "event_id": f"x-{unit}",
                "type": "exposure",
                "experiment": KEY,
                "variant": v,
                "unit_id": unit,
                "timestamp": first.isoformat(),
                "attributes": attributes,
            }
        )
        # a later exposure with other attributes: the first exposure's are kept
        out.append(
            {
                "event_id": f"x2-{unit}",
                "type": "exposure",
                "experiment": KEY,
                "variant": v,
                "unit_id": unit,
                "timestamp": (first + timedelta(hours=1)).isoformat(),
                "attributes": {"country": "later", "pro": 7},
            }
        )
        lift = 0.25 if (v == "b" and k < 3) else 0.0  # the effect differs between segments
        if rng.random() < 0.3 + lift:
            out.append(
                {
                    "event_id": f"c-{unit}",
                    "type": "conversion",
                    "name": "signup",
                    "unit_id": unit,
                    "timestamp": (first + timedelta(minutes=30)).isoformat(),
                }
            )
        for j in range(int(rng.poisson(1.0))):
            out.append(
                {
                    "event_id": f"p-{unit}-{j}",
                    "type": "conversion",
                    "name": "purchase",
                    "unit_id": unit,
                    "value": float(rng.gamma(2.0, 10.0)),
                    "timestamp": (first + timedelta(minutes=40)).isoformat(),
                }
            )
    return out


def test_slices_of_every_metric_by_the_first_exposures_dimensions(
    client: Any, admin: dict[str, str], keys: Any, bodies: Any, make_metric: Any, ingest: Any
) -> None:
    from statsmodels.stats.multitest import multipletests

    from service.events.models import ExposureUnit

    _setup(client, admin, bodies, make_metric, dimensions=["country", "pro"])
    events = _sliced_events(9)
    # the later exposures first: arrival order does not matter, the earliest exposure's count
    ingest([e for e in events if e["event_id"].startswith("x2-")])
    ingest([e for e in events if not e["event_id"].startswith("x2-")])
    session = open_session()
    try:
        stored = {u.unit_id: u.attributes for u in session.exec(select(ExposureUnit)).all()}
    finally:
        session.close()
    assert set(stored["s-1"] or {}) == {"country", "pro"} and stored["s-1"]["pro"] == "false"
    assert stored["s-9"] == {"pro": "true"}  # no country; `ignored` is not a dimension
    assert all(a is not None and a.get("country") != "later" for a in stored.values())

    r = client.get(f"/v1/experiments/{KEY}/results", headers=keys["viewer"])
    assert r.status_code == 200, r.text
    got = r.json()
    _assert_same(got, _live(KEY))  # the slices change nothing else, the decision included
    slices = got["slices"]
    assert slices["exploratory"] is True
    by_dim = {d["dimension"]: d for d in slices["dimensions"]}
    assert set(by_dim) == {"country", "pro"}
    country = by_dim["country"]
    counts: dict[str, int] = {}
    for a in stored.values():
        c = (a or {}).get("country")
        counts[c or "unknown"] = counts.get(c or "unknown", 0) + 1
    kept = sorted((c for c in counts if c != "unknown"), key=lambda c: (-counts[c], c))[:10]
    expected = {c: counts[c] for c in kept}
    expected["other"] = sum(n for c, n in counts.items() if c not in kept and c != "unknown")
    expected["unknown"] = counts["unknown"]
    assert country["values"] == expected
    assert list(country["values"])[:10] == kept
    assert by_dim["pro"]["values"] == {
        "false": sum(a["pro"] == "false" for a in stored.values()),
        "true": sum(a["pro"] == "true" for a in stored.values()),
    }
    for dim in by_dim.values():
        assert sum(dim["values"].values()) == got["units"]
        for m in dim["metrics"]:
            # corrected over every slice × treatment of the metric: statsmodels' Holm
            every = [c for s in m["slices"] for c in s["comparisons"]]
            comps = [c for c in every if c["absolute"]["p_value"] is not None]
            assert all(c["p_value_adjusted"] is None for c in every if c not in comps)
            if m["metric"] != "aov":  # no aov events here: nothing to test
                assert len(comps) == len(every) == len(m["slices"])
            if not comps:
                continue
            raw = [c["absolute"]["p_value"] for c in comps]
            want = multipletests(raw, method="holm")[1]
            assert_allclose([c["p_value_adjusted"] for c in comps], want, rtol=1e-12)
            assert all(c["significant"] == (c["p_value_adjusted"] < 0.05) for c in comps)
        # Cochran's Q of the primary metric across the dimension's slices, by hand
        (het,) = dim["heterogeneity"]
        primary = next(m for m in dim["metrics"] if m["role"] == "primary")
        est = np.array([s["comparisons"][0]["absolute"]["estimate"] for s in primary["slices"]])
        se = np.array([s["comparisons"][0]["absolute"]["std_error"] for s in primary["slices"]])
        w = 1 / se**2
        q = float(np.sum(w * (est - np.sum(w * est) / np.sum(w)) ** 2))
        from scipy.stats import chi2

        assert het["df"] == len(est) - 1 and het["slices"] == len(est)
        assert_allclose(het["statistic"], q, rtol=1e-12)
        assert_allclose(het["p_value"], chi2.sf(q, len(est) - 1), rtol=1e-10)


def test_the_slices_sufficient_statistics_add_up_to_the_whole(
    client: Any, admin: dict[str, str], bodies: Any, make_metric: Any, ingest: Any
) -> None:
    from dataclasses import replace

    from service.analysis.aggregate import slice_sums, variant_sums
    from service.analysis.service import analysis_window, metric_specs
    from service.experiments.service import get_row

    _setup(client, admin, bodies, make_metric, dimensions=["country", "pro"])
    ingest(_sliced_events(10))
    session = open_session()
    try:
        exp = get_row(session, KEY)
        specs = metric_specs(session, exp)
        window = analysis_window(session, exp)
        whole = variant_sums(session, specs, window, 600)
        dims = (("country", COUNTRIES[:5]), ("pro", ["true"]))
        combos = slice_sums(session, specs, replace(window, dimensions=dims), 600)
    finally:
        session.close()
    assert {c[0] for c in combos} == {*COUNTRIES[:5], "other", "unknown"}
    assert {c[1] for c in combos} == {"true", "other"}
    for metric, per_variant in whole.items():
        for variant, sums in per_variant.items():
            parts = [c[metric][variant] for c in combos.values() if variant in c[metric]]
            assert sum(p.n for p in parts) == sums.n
            for name, total in sums.sums.items():
                assert_allclose(sum(p.sums[name] for p in parts), total, rtol=1e-12)


def test_cochrans_q_matches_its_closed_form() -> None:
    from service.snapshots.service import cochran_q

    # θ = (1, 2, 3), se = 1: pooled 2, Q = 1 + 0 + 1 = 2, df = 2, P(χ²₂ > 2) = e^-1
    q, df, p = cochran_q([1.0, 2.0, 3.0], [1.0, 1.0, 1.0])
    assert (q, df) == (2.0, 2)
    assert_allclose(p, np.exp(-1.0), rtol=1e-12)
    # weights 1/se²: θ = (0, 1), se = (1, 0.5): w = (1, 4), pooled 0.8, Q = 0.64 + 4·0.04 = 0.8
    q, df, p = cochran_q([0.0, 1.0], [1.0, 0.5])
    assert_allclose(q, 0.8, rtol=1e-12)
    assert df == 1
    # P(χ²₁ > x) = erfc(√(x/2))
    from math import erfc, sqrt

    assert_allclose(p, erfc(sqrt(0.4)), rtol=1e-12)


def test_the_protocol_refuses_bad_dimensions(
    client: Any, admin: dict[str, str], bodies: Any, make_metric: Any
) -> None:
    make_metric("conversion", "binomial", event="signup")
    for bad in (["a", "b", "c", "d", "e", "f"], ["country", "country"], ["1bad"], "country"):
        r = client.post(
            "/v1/experiments", json=bodies.experiment("dims-bad", dimensions=bad), headers=admin
        )
        assert r.status_code == 422, (bad, r.text)
        assert "dimensions" in r.text
    r = client.post(
        "/v1/experiments", json=bodies.experiment("dims-ok", dimensions=["country"]), headers=admin
    )
    assert r.status_code == 201 and r.json()["dimensions"] == ["country"]
    assert client.post("/v1/experiments/dims-ok/start", headers=admin).status_code == 200
    r = client.patch("/v1/experiments/dims-ok", json={"dimensions": ["plan"]}, headers=admin)
    assert r.status_code == 409 and "dimensions" in r.text


# ------------------------------------------------- exposures carry the experiment's dimensions


def _unit_attributes() -> dict[str, Any]:
    from service.events.models import ExposureUnit

    session = open_session()
    try:
        return {u.unit_id: u.attributes for u in session.exec(select(ExposureUnit)).all()}
    finally:
        session.close()


def test_assign_and_ofrep_log_exposures_with_the_experiments_dimensions(
    client: Any, keys: Any, make_experiment: Any
) -> None:
    make_experiment("dims-assign", start=True, dimensions=["country", "tier"])
    sdk = keys["sdk"]
    config = client.get("/v1/sdk/config", headers=sdk).json()
    assert config["experiments"]["dims-assign"]["dimensions"] == ["country", "tier"]
    attributes = {"country": "FR", "tier": 2.0, "app": "2.1.0"}
    r = client.post(
        "/v1/assign",
        json={"unit_id": "a1", "attributes": attributes, "log_exposure": True},
        headers=sdk,
    )
    assert r.status_code == 200, r.text
    r = client.post(
        "/ofrep/v1/evaluate/flags/dims-assign",
        json={"context": {"targetingKey": "o1", "country": "DE", "tier": True}},
        headers=sdk,
    )
    assert r.status_code == 200, r.text
    # the bulk evaluation logs nothing (product.md §9)
    r = client.post(
        "/ofrep/v1/evaluate/flags", json={"context": {"targetingKey": "o2"}}, headers=sdk
    )
    assert r.status_code == 200
    assert _unit_attributes() == {
        "a1": {"country": "FR", "tier": "2"},
        "o1": {"country": "DE", "tier": "true"},
    }


def test_the_sdk_sends_the_experiments_dimensions_with_the_exposure() -> None:
    from trialbook._delivery import to_json
    from trialbook.dimensions import exposure_attributes

    config = {"experiments": {"e": {"dimensions": ["country", "n", "bad", "long"]}, "f": {}}}
    attrs = {"country": "FR", "n": 3, "bad": float("nan"), "long": "x" * 300, "other": 1}
    assert exposure_attributes(config, "e", attrs) == {"country": "FR", "n": 3}
    assert exposure_attributes(config, "f", attrs) is None
    assert exposure_attributes(config, "e", None) is None
    assert exposure_attributes(None, "e", attrs) is None
    assert (
        exposure_attributes({"experiments": {"e": {"dimensions": "country"}}}, "e", attrs) is None
    )
    item = (0, "e", "b", "u1", 1, 1_767_225_600.0, {"country": "FR", "n": 3})
    event = json.loads(to_json(item, 7))
    assert event["attributes"] == {"country": "FR", "n": 3}
    assert "attributes" not in json.loads(to_json((*item[:6], None), 7))
