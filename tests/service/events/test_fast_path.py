"""The fast ingestion path: one-pass validation, cheap hashing and text timestamps, group commit.

The fast path must be indistinguishable from the per-event path it replaces: the same events
accepted and refused, the same payload hashes (stored hashes must keep matching repeats sent
after an upgrade), the same stored timestamps, and with several requests in one transaction the
verdicts each would have had alone.
"""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service.events import service
from service.events import writer as event_writer
from service.events.models import ConversionIn, ExposureIn, batch_adapter, event_adapter
from service.events.plan import Job
from service.events.prepare import prepare
from service.events.store import Store, sqlite_ts

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

EXPOSURE = {
    "event_id": "e-1",
    "type": "exposure",
    "experiment": "new-checkout",
    "variant": "control",
    "unit_id": "u1",
    "timestamp": "2026-03-02T09:00:00Z",
}
CONVERSION = {
    "event_id": "c-1",
    "type": "conversion",
    "name": "purchase",
    "unit_id": "u1",
    "value": 2.5,
    "timestamp": "2026-03-02T09:00:00Z",
}

# Each case: one event as JSON text (so NaN, big numbers and raw literals can be written).
CASES = [
    json.dumps(EXPOSURE),
    json.dumps(EXPOSURE | {"phase": 2}),
    json.dumps(EXPOSURE | {"phase": None}),
    json.dumps(EXPOSURE | {"phase": 0}),
    json.dumps(EXPOSURE | {"phase": 1_000_001}),
    json.dumps(EXPOSURE | {"phase": 1.0}),
    json.dumps(EXPOSURE | {"phase": "1"}),
    json.dumps(EXPOSURE | {"phase": True}),
    json.dumps(EXPOSURE | {"timestamp": "2026-03-02T09:00:00"}),
    json.dumps(EXPOSURE | {"timestamp": "2026-03-02T11:00:00.5+02:00"}),
    json.dumps(EXPOSURE | {"timestamp": "2026-03-02 09:00:00Z"}),
    json.dumps(EXPOSURE | {"timestamp": "2026-02-30T09:00:00Z"}),
    json.dumps(EXPOSURE | {"timestamp": "1772442000"}),
    json.dumps(EXPOSURE | {"timestamp": 1772442000}),
    json.dumps(EXPOSURE | {"timestamp": 1772442000.5}),
    json.dumps(EXPOSURE | {"timestamp": True}),
    json.dumps(EXPOSURE | {"timestamp": None}),
    json.dumps(EXPOSURE | {"timestamp": "yesterday"}),
    json.dumps(EXPOSURE | {"timestamp": "2026-03-02T09:00:00.123Z"}),
    json.dumps(EXPOSURE | {"timestamp": "2026-03-02T09:00:00.000Z"}),
    json.dumps(EXPOSURE | {"timestamp": "2026-03-02T09:00:00.1234567Z"}),
    json.dumps(EXPOSURE | {"timestamp": "2026-03-02T09:00:00-00:00"}),
    json.dumps(EXPOSURE | {"timestamp": "2026-03-02T09:00:00.5+00:30"}),
    json.dumps(EXPOSURE | {"timestamp": "2026-03-02t09:00:00z"}),
    json.dumps(EXPOSURE | {"timestamp": "2026-02-29T09:00:00Z"}),
    json.dumps(EXPOSURE | {"timestamp": "2024-02-29T09:00:00Z"}),
    json.dumps(EXPOSURE | {"timestamp": "2026-13-02T09:00:00Z"}),
    json.dumps(EXPOSURE | {"timestamp": "2026-03-02T24:00:00Z"}),
    json.dumps(EXPOSURE | {"timestamp": "2026-03-02T23:59:60Z"}),
    json.dumps(EXPOSURE | {"timestamp": "2026-03-02T09:00:00+24:00"}),
    json.dumps(EXPOSURE | {"timestamp": "2026-03-02T09:00:00+23:59"}),
    json.dumps(EXPOSURE | {"timestamp": "0000-01-01T00:00:00Z"}),
    json.dumps(EXPOSURE | {"timestamp": "0001-01-01T00:00:00Z"}),
    json.dumps(EXPOSURE | {"timestamp": "0001-01-01T00:30:00+01:00"}),
    json.dumps(EXPOSURE | {"timestamp": "9999-12-31T23:59:59.999999Z"}),
    json.dumps(EXPOSURE | {"timestamp": "9999-12-31T23:59:59-01:00"}),
    json.dumps(EXPOSURE | {"experiment": ""}),
    json.dumps(EXPOSURE | {"experiment": "x" * 81}),
    json.dumps(EXPOSURE | {"variant": "v" * 65}),
    json.dumps(EXPOSURE | {"unit_id": 42}),
    json.dumps(EXPOSURE | {"unit_id": "u" * 257}),
    json.dumps(EXPOSURE | {"event_id": "e" * 64}),
    json.dumps(EXPOSURE | {"event_id": "e" * 65}),
    json.dumps(EXPOSURE | {"event_id": "has space"}),
    json.dumps(EXPOSURE | {"event_id": "é"}),
    json.dumps(EXPOSURE | {"name": "purchase"}),
    json.dumps({k: v for k, v in EXPOSURE.items() if k != "variant"}),
    json.dumps(CONVERSION),
    json.dumps({k: v for k, v in CONVERSION.items() if k != "value"}),
    json.dumps(CONVERSION | {"value": 3}),
    json.dumps(CONVERSION | {"value": -0.0}),
    json.dumps(CONVERSION | {"value": True}),
    json.dumps(CONVERSION | {"value": "1.5"}),
    json.dumps(CONVERSION | {"value": None}),
    json.dumps(CONVERSION | {"value": 1e308}),
    json.dumps(CONVERSION | {"value": 1e12}),
    json.dumps(CONVERSION | {"value": -1.5e154}),
    json.dumps(CONVERSION | {"unit_id": "u\x00"}),
    json.dumps(CONVERSION | {"name": "n\x85"}),
    json.dumps(EXPOSURE | {"variant": "v\x1f"}),
    json.dumps(EXPOSURE | {"experiment": "e\x7f"}),
    json.dumps(EXPOSURE | {"timestamp": "1999-12-31T23:59:59Z"}),
    json.dumps(EXPOSURE | {"timestamp": "2000-01-01T00:00:00Z"}),
    json.dumps(EXPOSURE | {"timestamp": "2999-01-01T00:00:00Z"}),
    json.dumps(CONVERSION).replace("2.5", "1e999"),
    json.dumps(CONVERSION).replace("2.5", "NaN"),
    json.dumps(CONVERSION).replace("2.5", "-Infinity"),
    json.dumps(CONVERSION | {"name": ""}),
    json.dumps(CONVERSION | {"name": "n" * 201}),
    json.dumps(CONVERSION | {"phase": 1}),
    json.dumps(CONVERSION | {"type": "click"}),
    json.dumps({k: v for k, v in CONVERSION.items() if k != "type"}),
    json.dumps(["not", "an", "object"]),
    "17",
    "null",
    # exposure attributes (product.md §5)
    json.dumps(EXPOSURE | {"attributes": {"country": "de", "n": 3, "pro": True, "f": 2.5}}),
    json.dumps(EXPOSURE | {"attributes": {}}),
    json.dumps(EXPOSURE | {"attributes": None}),
    json.dumps(EXPOSURE | {"attributes": {"country": {"nested": 1}}}),
    json.dumps(EXPOSURE | {"attributes": {"country": "x" * 257}}),
    json.dumps(EXPOSURE | {"attributes": {"country": "a\u0000b"}}),
    json.dumps(EXPOSURE | {"attributes": {"1bad name": "x"}}),
    json.dumps(EXPOSURE | {"attributes": {f"a{i}": i for i in range(51)}}),
    json.dumps(EXPOSURE | {"attributes": ["country"]}),
    json.dumps(EXPOSURE).replace('"unit_id"', '"attributes": {"n": NaN}, "unit_id"'),
]


def fast(event_json: str) -> list[dict[str, Any]] | None:
    """The events of the one-pass validator, or None if it refused the batch."""
    try:
        return list(batch_adapter.validate_json('{"events": [' + event_json + "]}")["events"])
    except ValidationError:
        return None


def slow(event_json: str) -> ExposureIn | ConversionIn | None:
    """The event as the per-event path validates it (json.loads, then the models)."""
    try:
        return event_adapter.validate_python(json.loads(event_json))
    except ValidationError:
        return None


def pipeline(event_json: str) -> tuple[Any, ...] | None:
    """What ingestion makes of the event: its prepared item (minus the index), or None."""
    parsed = service.parse_batch(('{"events": [' + event_json + "]}").encode())
    items, _ = prepare(parsed.events, parsed.indexes, sqlite=True)
    return items[0][1:] if items else None


def expected(model: ExposureIn | ConversionIn) -> tuple[Any, ...]:
    """The item the models say the event is (the documented hash, SQLAlchemy's stored text)."""
    stored = sqlite_ts(model.timestamp)
    if isinstance(model, ExposureIn):
        return (
            True,
            model.event_id,
            service.payload_hash(model),
            stored,
            model.unit_id,
            model.experiment,
            model.variant,
            model.phase,
            model.attributes,
        )
    return (
        False,
        model.event_id,
        service.payload_hash(model),
        stored,
        model.unit_id,
        model.name,
        model.value + 0.0,
        None,
        None,
    )


@pytest.mark.parametrize("event_json", CASES)
def test_the_one_pass_validator_accepts_and_refuses_what_the_models_do(event_json):
    """Whichever path an event takes (the one-pass validator with its text timestamps, or the
    models after a fallback), ingestion accepts what the models accept, refuses what they
    refuse, and makes the same row of it."""
    by_slow = slow(event_json)
    try:
        in_utc = by_slow is not None and sqlite_ts(by_slow.timestamp) is not None
    except OverflowError:  # valid, but before year 1 once in UTC: refused by ingestion
        in_utc = False
    got = pipeline(event_json)
    assert got == (expected(by_slow) if in_utc and by_slow is not None else None)
    if fast(event_json) is not None:  # the fast path never takes what the models refuse,
        # except a text whose ranges only _prepare checks (2026-02-30), refused there.
        assert by_slow is not None or got is None


def test_the_common_shapes_take_the_fast_path():
    for stamp in (
        "2026-03-02T09:00:00Z",
        "2026-03-02T09:00:00.123456+00:00",
        "2026-03-02T09:00:00.5-07:00",
    ):
        assert fast(json.dumps(EXPOSURE | {"timestamp": stamp})) is not None
        assert fast(json.dumps(CONVERSION | {"timestamp": stamp})) is not None


def test_a_batch_with_one_bad_event_falls_back_and_names_it():
    body = json.dumps({"events": [EXPOSURE, CONVERSION | {"value": "x"}, CONVERSION]}).encode()
    parsed = service.parse_batch(body)
    assert parsed.indexes == [0, 2]
    assert [(r.index, r.code) for r in parsed.rejected] == [(1, "invalid")]
    assert "value" in parsed.rejected[0].error
    clean = service.parse_batch(json.dumps({"events": [EXPOSURE, CONVERSION]}).encode())
    assert clean.indexes is None and clean.rejected == []
    assert [e["event_id"] for e in clean.events] == ["e-1", "c-1"]


# ---------------------------------------------------------------------- hashes and timestamps


def reference_digest(canonical: str) -> str:
    # The canonical payload documented in service.payload_hash (unchanged since the first
    # release): BLAKE2b-128 of the length-prefixed fields and the UTC instant in ISO 8601.
    return hashlib.blake2b(canonical.encode("utf-8"), digest_size=16).hexdigest()


def prepared(event: dict[str, Any], *, sqlite: bool = True) -> Any:
    """The one item ``_prepare`` makes of an event sent as JSON."""
    parsed = service.parse_batch(json.dumps({"events": [event]}).encode())
    assert parsed.rejected == []
    items, rejected = prepare(parsed.events, parsed.indexes, sqlite=sqlite)
    assert rejected == []
    (item,) = items
    return item


def test_the_payload_hash_is_the_documented_canonical_form():
    exposure = EXPOSURE | {"timestamp": "2026-03-02T11:00:00.25+02:00"}
    assert prepared(exposure)[3] == reference_digest(
        "exposure|3:e-1|12:new-checkout|7:control|2:u1|2026-03-02T09:00:00.250000+00:00|None"
    )
    assert prepared(exposure | {"phase": 1})[3] == reference_digest(
        "exposure|3:e-1|12:new-checkout|7:control|2:u1|2026-03-02T09:00:00.250000+00:00|1"
    )
    no_value = {k: v for k, v in CONVERSION.items() if k != "value"}
    assert prepared(no_value)[3] == reference_digest(
        "conversion|3:c-1|8:purchase|2:u1|2026-03-02T09:00:00+00:00|1.0"
    )
    assert prepared(CONVERSION | {"value": -0.0})[3] == prepared(CONVERSION | {"value": 0})[3]


def test_stored_timestamps_are_utc_text_on_sqlite_and_say_utc_on_postgresql():
    item = prepared(EXPOSURE | {"timestamp": "2026-03-02T01:30:00.000001-07:30"})
    assert item[4] == "2026-03-02 09:00:00.000001"
    assert prepared(EXPOSURE, sqlite=False)[4] == "2026-03-02 09:00:00.000000+00"


def test_a_timestamp_outside_the_utc_range_is_rejected_not_a_500():
    events = [EXPOSURE | {"timestamp": "0001-01-01T00:30:00+01:00"}, CONVERSION]
    parsed = service.parse_batch(json.dumps({"events": events}).encode())
    items, rejected = prepare(parsed.events, parsed.indexes, sqlite=True)
    assert [i[0] for i in items] == [1]
    assert [(r.index, r.code) for r in rejected] == [(0, "timestamp_out_of_range")]


@settings(max_examples=200, deadline=None)
@given(
    # product.md §5: from 2000-01-01 to 24 h after the clock (a day inside, whatever the offset)
    moment=st.datetimes(
        min_value=datetime(2000, 1, 2), max_value=datetime(2026, 1, 1), timezones=st.just(UTC)
    ),
    offset_minutes=st.one_of(
        st.just(0), st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59)
    ),
    value=st.floats(min_value=-1e12, max_value=1e12),
    phase=st.one_of(st.none(), st.integers(min_value=1, max_value=1_000_000)),
    digits=st.integers(min_value=1, max_value=6),
    zulu=st.booleans(),
)
def test_prepared_rows_match_the_models_hash_and_sqlalchemys_text(
    moment, offset_minutes, value, phase, digits, zulu
):
    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    stamp = local.isoformat()
    if digits < 6 and local.microsecond:  # a shorter fraction, as JavaScript's toISOString
        stamp = stamp[:20] + stamp[20:26][:digits].ljust(1, "0") + stamp[26:]
        local = datetime.fromisoformat(stamp)
        moment = local.astimezone(UTC)
    if zulu and offset_minutes == 0:
        stamp = stamp.removesuffix("+00:00") + "Z"
    exposure = EXPOSURE | {"timestamp": stamp} | ({} if phase is None else {"phase": phase})
    conversion = CONVERSION | {"timestamp": stamp, "value": value}
    for event in (exposure, conversion):
        item = prepared(event)
        model = event_adapter.validate_python(event)
        assert item[3] == service.payload_hash(model)
        assert item[4] == sqlite_ts(moment)  # SQLAlchemy's text, fixed width


# -------------------------------------------------------------------------------- group commit


def job(events: list[dict[str, Any]]) -> Any:
    parsed = service.parse_batch(json.dumps({"events": events}).encode())
    sqlite = service.get_engine().dialect.name == "sqlite"
    items, rejected = prepare(parsed.events, parsed.indexes, sqlite=sqlite)
    return Job(items, parsed.rejected + rejected)


def verdicts(j: Any) -> tuple[int, int, int, int, list[tuple[int, str]]]:
    r = j.result()
    return (
        r.accepted,
        r.duplicates,
        r.conflicts,
        r.late,
        [(x.index, x.code) for x in r.rejected],
    )


def test_requests_in_one_transaction_get_the_verdicts_they_would_get_alone(
    engine, running, events, count
):
    from service.db import open_session

    stored = events.conversion("u0", value=1.0)
    first = job([stored])
    session = open_session(write=True)
    try:
        event_writer.store_jobs(session, [first])
    finally:
        session.close()

    a_exposure = events.exposure("u1")
    a_conversion = events.conversion("u1", value=5.0)
    a = job([a_exposure, a_conversion, events.exposure("u2", "blue")])
    b = job(
        [
            a_exposure,  # stored by `a` in the same transaction: a duplicate
            dict(a_conversion, value=6.0),  # a conflict with `a`'s payload
            stored,  # stored before: a duplicate
            dict(stored, value=2.0),  # a repeat inside `b`: a conflict
            events.exposure("u3", "treatment"),
        ]
    )
    session = open_session(write=True)
    try:
        event_writer.store_jobs(session, [a, b])
    finally:
        session.close()
    assert verdicts(a) == (2, 0, 0, 0, [(2, "unknown_variant")])
    assert verdicts(b) == (1, 2, 2, 0, [])
    assert count("exposure") == 2 and count("conversion") == 2
    assert count("exposure_unit") == 2
    assert count("conversion", "value = 5.0") == 1  # the first payload is kept


def test_concurrent_requests_are_grouped_and_each_counted_exactly(engine, running, events, count):
    batches = [events.mixed(200, prefix=f"t{i}-") for i in range(12)]
    shared = events.mixed(50, prefix="shared-")  # every thread also sends these
    answers: list[Any] = [None] * len(batches)
    start = threading.Barrier(len(batches))

    def send(i: int) -> None:
        body = json.dumps({"events": batches[i] + shared}).encode()
        start.wait()
        answers[i] = service.ingest_body(body)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a is not None for a in answers)
    assert sum(a.accepted for a in answers) == 12 * 200 + 50
    assert sum(a.duplicates for a in answers) == 11 * 50
    assert all(a.conflicts == 0 and a.rejected == [] for a in answers)
    assert count("exposure") + count("conversion") == 12 * 200 + 50


def test_a_failing_request_in_a_group_fails_alone(engine, running, events, count, monkeypatch):
    good, bad = job(events.mixed(10, prefix="g")), job(events.mixed(10, prefix="b"))
    real_store = event_writer.store_jobs

    def store(session: Any, jobs: Any) -> None:
        if any(j is bad for j in jobs):
            raise RuntimeError("disk on fire")
        real_store(session, jobs)

    monkeypatch.setattr(event_writer, "store_jobs", store)
    event_writer.GroupWriter._write([good, bad])
    assert good.committed and good.error is None
    assert verdicts(good) == (10, 0, 0, 0, [])
    assert not bad.committed and isinstance(bad.error, RuntimeError)
    assert count("exposure") + count("conversion") == 10


def test_the_writer_raises_the_error_of_a_request_it_could_not_store(
    engine, running, events, monkeypatch
):
    def store(session: Any, jobs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(event_writer, "store_jobs", store)
    writer = event_writer.GroupWriter(100)
    with pytest.raises(RuntimeError, match="disk on fire"):
        writer.submit(job(events.mixed(4)))
    # The lead was released: the next request is written.
    monkeypatch.undo()
    j = job(events.mixed(4, prefix="next"))
    writer.submit(j)
    assert j.committed and j.accepted == 4


def test_grouped_verdicts_equal_one_request_at_a_time_even_for_reused_ids(
    engine, running, events, count
):
    """Random jobs drawing ids from a small pool (repeats inside and across jobs, the same id as
    an exposure and as a conversion): one transaction for all gives the verdicts, and stores the
    rows, that one transaction each gives. Each run uses its own id and unit prefix."""
    import random

    from service.db import open_session

    rng = random.Random(20260302)

    def scenario() -> list[list[tuple[str, str, str, int]]]:
        # (kind, id, variant or value, seconds)
        return [
            [
                (
                    rng.choice(["exposure", "conversion"]),
                    f"id{rng.randrange(6)}",
                    rng.choice(["control", "treatment"]),
                    rng.randrange(3),
                )
                for _ in range(rng.randrange(1, 6))
            ]
            for _ in range(rng.randrange(2, 5))
        ]

    def build(spec: list[tuple[str, str, str, int]], prefix: str) -> Any:
        out = []
        for kind, event_id, choice, sec in spec:
            at = T0 + timedelta(seconds=sec)
            if kind == "exposure":
                e = events.exposure(f"{prefix}unit", choice, at=at)
            else:
                e = events.conversion(f"{prefix}unit", value=float(choice == "control"), at=at)
            out.append(e | {"event_id": prefix + event_id})
        return job(out)

    for n in range(25):
        spec = scenario()
        grouped = [build(s, f"g{n}-") for s in spec]
        session = open_session(write=True)
        try:
            event_writer.store_jobs(session, grouped)
        finally:
            session.close()
        alone = [build(s, f"s{n}-") for s in spec]
        for j in alone:
            session = open_session(write=True)
            try:
                event_writer.store_jobs(session, [j])
            finally:
                session.close()
        assert [verdicts(j) for j in grouped] == [verdicts(j) for j in alone], spec
        for table in ("exposure", "conversion"):
            assert count(table, "event_id LIKE :p", p=f"g{n}-%") == count(
                table, "event_id LIKE :p", p=f"s{n}-%"
            )
        assert count("exposure_unit", "unit_id = :u", u=f"g{n}-unit") == count(
            "exposure_unit", "unit_id = :u", u=f"s{n}-unit"
        )


# ------------------------------------------------------------------------ multi-row statements


@pytest.mark.parametrize("n", [1, 2, 255, 256, 257, 1024, 1025, 2047, 2048, 2049, 4096, 5000])
def test_multi_row_inserts_store_each_row_once_whatever_the_padding(n):
    import sqlite3

    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, event_id TEXT UNIQUE, v INTEGER)")
    conn.execute("CREATE TABLE u (k TEXT PRIMARY KEY, hits INTEGER)")
    cur = conn.cursor()
    flat = [x for i in range(n) for x in (f"e{i}", i)]
    before = conn.total_changes
    Store.insert_flat(
        cur, "INSERT INTO t (event_id, v)", "ON CONFLICT(event_id) DO NOTHING", 2, flat
    )
    assert conn.total_changes - before == n  # padded copies change nothing
    assert conn.execute("SELECT COUNT(*), SUM(v) FROM t").fetchone() == (n, n * (n - 1) // 2)
    # Rowids run one above another: the slow path's "the last k rowids" holds.
    assert conn.execute("SELECT MIN(id), MAX(id) FROM t").fetchone() == (1, n)
    # An idempotent upsert, as exposure_unit's: copies of the last row leave it as it was.
    flat_u = [x for i in range(n) for x in (f"k{i}", 1)]
    Store.insert_flat(
        cur,
        "INSERT INTO u (k, hits)",
        "ON CONFLICT(k) DO UPDATE SET hits = excluded.hits",
        2,
        flat_u,
    )
    assert conn.execute("SELECT COUNT(*), SUM(hits) FROM u").fetchone() == (n, n)


def test_a_plan_made_before_the_experiment_changed_is_made_again_by_the_writer(
    engine, running, events
):
    """Request threads plan from the experiments as last read (up to a second old); the writer
    reads them again in its transaction, so an event is judged on what the database holds."""
    from sqlalchemy import text

    first = service.ingest_body(json.dumps({"events": [events.exposure("u1")]}).encode())
    assert (first.accepted, first.late) == (1, 0)
    with engine.begin() as conn:  # stopped by hand, behind the reading the request threads keep
        conn.execute(text("UPDATE experiment SET status = 'stopped' WHERE key = 'new-checkout'"))
    stale = job([events.exposure("u2")])
    service.plan_job(stale, sqlite=service.get_engine().dialect.name == "sqlite")
    assert stale.plan is not None and stale.plan.late == 0  # planned on the old reading
    second = service.ingest_body(json.dumps({"events": [events.exposure("u3")]}).encode())
    assert (second.accepted, second.late) == (1, 1)  # the writer's reading: stopped, late
