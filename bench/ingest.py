"""Benchmark: event ingestion end to end over HTTP vs the raw idempotent insert rate, same run.

Promise (issue 5):

- SQLite, one uvicorn worker, 8 concurrent clients on 127.0.0.1, batches of 1,000 exposures and
  conversions: >= 70 % of the raw idempotent insert rate of the same rows into the same tables and
  indexes, measured in the same run, and >= 30,000 events/s.
- PostgreSQL (``--postgres URL``), two workers: >= 70 % of the raw rate, aiming at 100,000/s.
- Server memory flat over a soak (``--soak SECONDS``; the documented run uses 300): peak RSS.
- Issue 14: ingestion while two clients poll ``GET …/results`` and ``GET …/report`` of the
  experiment back to back (``--pollers 2``, the default) >= 90 % of ingestion alone: each round
  runs the HTTP load a second time, on a fresh database, with the pollers (the results are a
  stored snapshot, computed by the first read; the report renders from it).

Method. The same rows (half exposures, half conversions, random UUIDv4 ids unless ``--ids v7``)
are stored three ways into freshly migrated, empty tables:

1. raw: the driver alone, one connection, one transaction per 1,000 rows,
   ``INSERT ... ON CONFLICT (event_id) DO NOTHING`` (SQLite: ``executemany``; PostgreSQL: ``COPY``
   into a staging table + ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``), values prepared in
   advance, no validation, no ``exposure_unit``: the baseline of the promise;
2. raw + exposure_unit: the same, and in each transaction the upsert of the batch's first
   exposures into ``exposure_unit`` (the index the analysis reads, which the server maintains
   with every batch), printed beside for scale;
3. HTTP: ``POST /v1/events`` bodies serialized in advance, 8 client threads, each batch answered
   with its verdicts after the commit (``synchronous=FULL`` on SQLite), ``exposure_unit``
   maintained.

events/s = events / wall time. The three alternate over ``--rounds`` rounds (default 3), each on
a fresh database, and the ratio is taken per round and reported as the median: on a shared
machine the load changes within a minute, and a baseline measured once, apart, is not the same-run
baseline the promise is about. The 1-minute load average is printed beside every figure. For
scale, the raw insert is also run once with UUIDv7 ids (time-ordered: the unique index is appended
to instead of written at random pages) and, on SQLite, into a copy of the tables without the
unique index.

The database of ``--postgres`` is scratch: its schema ``public`` is dropped and recreated.

Run: ``.venv/bin/python bench/ingest.py [--batches N] [--rounds R] [--soak SECONDS]
[--postgres URL]``;
documented: ``.venv/bin/python bench/ingest.py --soak 300``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.live import LiveServer, LiveServerError  # noqa: E402

ADMIN_KEY = "tb_bench_admin_" + "x" * 32
BATCH = 1000
CLIENTS = 8
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def uuid7(rng: random.Random, unix_ms: int) -> str:
    """A UUIDv7 (RFC 9562 §5.7): 48-bit ms timestamp, version 7, random rest."""
    value = (unix_ms << 80) | (0x7 << 76) | (rng.getrandbits(12) << 64) | (0b10 << 62)
    return str(uuid.UUID(int=value | rng.getrandbits(62)))


def make_batches(n_batches: int, ids: str, seed: int = 5) -> list[list[dict[str, Any]]]:
    """``n_batches`` batches of 1,000 events: an exposure and a conversion per unit."""
    rng = random.Random(seed)
    start_ms = int(time.time() * 1000)
    out = []
    for b in range(n_batches):
        batch: list[dict[str, Any]] = []
        for i in range(BATCH):
            n = b * BATCH + i
            event_id = (
                uuid7(rng, start_ms + n // 50)
                if ids == "v7"
                else str(uuid.UUID(int=rng.getrandbits(128), version=4))
            )
            at = (T0 + timedelta(milliseconds=n)).isoformat().replace("+00:00", "Z")
            unit = f"user-{n // 2}"
            if n % 2 == 0:
                batch.append(
                    {
                        "event_id": event_id,
                        "type": "exposure",
                        "experiment": "bench",
                        "variant": "control" if rng.random() < 0.5 else "treatment",
                        "unit_id": unit,
                        "timestamp": at,
                    }
                )
            else:
                batch.append(
                    {
                        "event_id": event_id,
                        "type": "conversion",
                        "name": "purchase",
                        "unit_id": unit,
                        "value": round(rng.uniform(1, 200), 2),
                        "timestamp": at,
                    }
                )
        out.append(batch)
    return out


# ------------------------------------------------------------------------------------- database


def reset_database(url: str) -> None:
    """Empty the database and migrate it to the latest revision."""
    from service.db import make_engine
    from service.migrate import upgrade

    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    else:
        from sqlalchemy import text

        engine = make_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    upgrade(url)


def seed_experiment(url: str) -> int:
    """Create and start experiment `bench` straight in the database; return its id."""
    from sqlalchemy import text

    from service.db import make_engine

    engine = make_engine(url)
    variants = json.dumps(
        [
            {"key": "control", "weight": 0.5, "is_control": True},
            {"key": "treatment", "weight": 0.5, "is_control": False},
        ]
    )
    now = datetime.now(UTC)
    with engine.begin() as conn:
        exp_id = conn.execute(
            text(
                "INSERT INTO experiment (key, title, owner, hypothesis, randomization_unit, "
                "variants, traffic_fraction, overrides, primary_metric, primary_mde, "
                "secondary_metrics, guardrails, alpha, power, analysis, tags, notes, status, seed, "
                "phase, created_by, created_at, updated_at, started_at, dimensions) VALUES ("
                "'bench', 'Bench', 'bench', '\"h\"', 'user_id', :v, 1.0, '{}', 'conversion', 0.1, "
                "'[]', '[]', 0.05, 0.8, '{}', '[]', '[]', 'running', 'seed', 1, 'bench', :now, "
                ":now, :now, '[]') "
                "RETURNING id"
            ),
            {"v": variants, "now": now},
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO experiment_phase (experiment_id, phase, variants, traffic_fraction, "
                "started_at) VALUES (:e, 1, :v, 1.0, :now)"
            ),
            {"e": exp_id, "v": variants, "now": now},
        )
    engine.dispose()
    return int(exp_id)


def raw_rows(
    batches: list[list[dict[str, Any]]], exp_id: int, sqlite: bool
) -> list[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """The rows the service would store, prepared in advance (hash: a fixed 32-char string):
    per batch, the exposures, the conversions and the ``exposure_unit`` rows of the exposures."""
    from service.events.plan import unit_rows as _unit_rows
    from service.events.store import sqlite_ts as _sqlite_ts

    now = datetime.now(UTC)
    received: Any = _sqlite_ts(now) if sqlite else now
    digest = "0" * 32
    out = []
    for batch in batches:
        exposures, conversions = [], []
        for e in batch:
            ts_dt = datetime.fromisoformat(e["timestamp"])
            ts: Any = _sqlite_ts(ts_dt) if sqlite else ts_dt
            if e["type"] == "exposure":
                exposures.append(
                    (
                        e["event_id"],
                        exp_id,
                        1,
                        e["variant"],
                        e["unit_id"],
                        ts,
                        received,
                        digest,
                        0 if sqlite else False,
                    )
                )
            else:
                conversions.append(
                    (e["event_id"], e["name"], e["unit_id"], e["value"], ts, received, digest)
                )
        # no exposure attributes (the bench's exposures carry none): NULL like the server's
        units = sorted(_unit_rows(exposures, int if sqlite else bool, {}))
        out.append((exposures, conversions, units))
    return out


EXPOSURE_COLS = (
    "event_id, experiment_id, phase, variant, unit_id, ts, received_at, payload_hash, late"
)
CONVERSION_COLS = "event_id, name, unit_id, value, ts, received_at, payload_hash"
UNIT_COLS = "experiment_id, phase, unit_id, variant, first_ts, multiple, attributes"


def raw_sqlite(path: str, rows: list[Any], *, unique: bool = True, units: bool = False) -> float:
    """Events/s of idempotent inserts with the sqlite3 driver (WAL, synchronous=FULL); with
    ``units``, each transaction also upserts the batch's ``exposure_unit`` rows."""
    import sqlite3

    from service.events.store import UNIT_MERGE

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    exp_table, conv_table, conflict = "exposure", "conversion", " ON CONFLICT(event_id) DO NOTHING"
    if not unique:
        exp_table, conv_table, conflict = "exposure_nounique", "conversion_nounique", ""
        conn.execute(f"CREATE TABLE {exp_table} AS SELECT * FROM exposure WHERE 0")
        conn.execute(f"CREATE TABLE {conv_table} AS SELECT * FROM conversion WHERE 0")
        conn.execute(f"CREATE INDEX ix_cnu ON {conv_table} (name, unit_id, ts)")
    exp_sql = f"INSERT INTO {exp_table} ({EXPOSURE_COLS}) VALUES ({','.join('?' * 9)}){conflict}"
    conv_sql = (
        f"INSERT INTO {conv_table} ({CONVERSION_COLS}) VALUES ({','.join('?' * 7)}){conflict}"
    )
    unit_sql = f"INSERT INTO exposure_unit ({UNIT_COLS}) VALUES ({','.join('?' * 7)}) {UNIT_MERGE}"
    n = 0
    t0 = time.perf_counter()
    for exposures, conversions, unit_rows in rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(exp_sql, exposures)
        conn.executemany(conv_sql, conversions)
        if units:
            conn.executemany(unit_sql, unit_rows)
        conn.execute("COMMIT")
        n += len(exposures) + len(conversions)
    elapsed = time.perf_counter() - t0
    conn.close()
    return n / elapsed


def raw_postgres(url: str, rows: list[Any], *, units: bool = False) -> float:
    """Events/s of COPY into a staging table + INSERT ... ON CONFLICT DO NOTHING, one
    connection; with ``units``, also COPY + upsert of the ``exposure_unit`` rows."""
    import psycopg

    from service.events.store import UNIT_MERGE

    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    n = 0
    with psycopg.connect(conninfo) as conn:
        for table, cols in (
            ("exposure", EXPOSURE_COLS),
            ("conversion", CONVERSION_COLS),
            ("exposure_unit", UNIT_COLS),
        ):
            conn.execute(f"CREATE TEMP TABLE raw_{table} AS SELECT {cols} FROM {table} WHERE false")
        conn.commit()
        t0 = time.perf_counter()
        for exposures, conversions, unit_rows in rows:
            with conn.cursor() as cur:
                for table, cols, data, conflict in (
                    ("exposure", EXPOSURE_COLS, exposures, "ON CONFLICT (event_id) DO NOTHING"),
                    (
                        "conversion",
                        CONVERSION_COLS,
                        conversions,
                        "ON CONFLICT (event_id) DO NOTHING",
                    ),
                    ("exposure_unit", UNIT_COLS, unit_rows if units else [], UNIT_MERGE),
                ):
                    if not data:
                        continue
                    with cur.copy(f"COPY raw_{table} ({cols}) FROM STDIN") as copy:
                        for row in data:
                            copy.write_row(row)
                    cur.execute(
                        f"INSERT INTO {table} ({cols}) SELECT {cols} FROM raw_{table} {conflict}"
                    )
                    cur.execute(f"TRUNCATE raw_{table}")
            conn.commit()
            n += len(exposures) + len(conversions)
        elapsed = time.perf_counter() - t0
    return n / elapsed


# ----------------------------------------------------------------------------------------- HTTP


class Server(LiveServer):
    """The benched uvicorn server, with the resident memory of its processes."""

    def start(self, timeout: float = 60) -> None:
        """Start, wait for ``/healthz``, then for every worker; exit the bench if it fails."""
        try:
            super().start(timeout)
        except LiveServerError as e:
            raise SystemExit(str(e)) from None
        # Several workers: wait until every one answers (they start one after the other).
        time.sleep(1.0 if self.workers > 1 else 0)

    def rss_kib(self) -> int:
        """Resident memory of the server process and its workers, KiB."""
        assert self.proc is not None
        pids = [self.proc.pid]
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            pids += [int(p) for p in children.split()]
        except OSError:
            pass
        total = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total


def sdk_key(base: str) -> str:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    r = httpx.post(base + "/v1/keys", json={"name": "bench-sdk", "role": "sdk"}, headers=admin)
    r.raise_for_status()
    return str(r.json()["key"])


def make_metric(base: str) -> None:
    """The metric the seeded experiment's primary names (so that its results hold one)."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    body = {"key": "conversion", "name": "conversion", "type": "binomial", "event": "purchase"}
    httpx.post(base + "/v1/metrics", json=body, headers=admin).raise_for_status()


POLLED = ("/v1/experiments/bench/results", "/v1/experiments/bench/report")


def poll(base: str, stop: threading.Event, counts: dict[str, int], lock: threading.Lock) -> None:
    """Read the results and the report in turn, back to back, until ``stop`` (a dashboard
    left open, as fast as the server answers)."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=base, headers=admin, timeout=120) as client:
        i = 0
        while not stop.is_set():
            path = POLLED[i % 2]
            i += 1
            try:
                status: int | str = client.get(path).status_code
            except httpx.TransportError as e:
                status = type(e).__name__
            with lock:
                name = f"{path.rsplit('/', 1)[1]} {status}"
                counts[name] = counts.get(name, 0) + 1


def http_rate(
    base: str, key: str, bodies: list[bytes], pollers: int = 0
) -> tuple[float, dict[str, int]]:
    """Events/s over HTTP with ``CLIENTS`` threads; and the summed verdicts (with ``pollers``
    clients reading the results and the report meanwhile: their answers too)."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    next_index = iter(range(len(bodies)))
    lock = threading.Lock()
    totals = {"accepted": 0, "duplicates": 0, "conflicts": 0, "rejected": 0, "errors": 0}
    stop = threading.Event()
    polls: dict[str, int] = {}
    readers = [
        threading.Thread(target=poll, args=(base, stop, polls, lock)) for _ in range(pollers)
    ]
    for t in readers:
        t.start()

    def worker() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                r = client.post("/v1/events", content=bodies[i])
                with lock:
                    if r.status_code != 200:
                        totals["errors"] += 1
                        continue
                    answer = r.json()
                    for k in ("accepted", "duplicates", "conflicts"):
                        totals[k] += answer[k]
                    totals["rejected"] += len(answer["rejected"])

    threads = [threading.Thread(target=worker) for _ in range(CLIENTS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    stop.set()
    for t in readers:
        t.join()
    return len(bodies) * BATCH / elapsed, totals | polls


def soak(server: Server, key: str, seconds: float) -> tuple[int, int, int, int]:
    """Send fresh batches for ``seconds``; return (events, RSS at start, peak, end) in KiB."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    template = make_batches(1, "v4", seed=99)[0]
    stop = time.monotonic() + seconds
    sent = [0]
    lock = threading.Lock()

    def worker(w: int) -> None:
        rng = random.Random(w)
        with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
            while time.monotonic() < stop:
                batch = [
                    dict(e, event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)))
                    for e in template
                ]
                r = client.post("/v1/events", content=json.dumps({"events": batch}).encode())
                if r.status_code == 200:
                    with lock:
                        sent[0] += int(r.json()["accepted"])

    start_rss = server.rss_kib()
    peak = start_rss
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(CLIENTS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    minute = 1
    while any(t.is_alive() for t in threads):
        rss = server.rss_kib()
        peak = max(peak, rss)
        if time.monotonic() - t0 >= 60 * minute:  # the curve, to see it level off
            print(f"  soak minute {minute}: {sent[0]:,} events, server RSS {rss / 1024:.1f} MiB")
            minute += 1
        time.sleep(0.5)
    return sent[0], start_rss, peak, server.rss_kib()


# ------------------------------------------------------------------------------------------ run


def load() -> str:
    """The 1-minute load average, to print beside each figure (the machine may be shared)."""
    return f"load {os.getloadavg()[0]:.1f}"


def median(values: list[float]) -> float:
    return statistics.median(values)


def run(url: str, workers: int, args: argparse.Namespace, tmp: Path) -> None:
    sqlite = url.startswith("sqlite")
    kind = "SQLite" if sqlite else "PostgreSQL"
    print(
        f"== {kind}: {args.batches} batches of {BATCH} events ({args.ids} ids), "
        f"{workers} worker(s), {CLIENTS} clients, {args.rounds} round(s) of raw then HTTP"
    )
    batches = make_batches(args.batches, args.ids)
    bodies = [json.dumps({"events": b}).encode() for b in batches]

    def raw(ids: str, unique: bool = True, units: bool = False) -> float:
        reset_database(url)
        exp_id = seed_experiment(url)
        rows = raw_rows(
            batches if ids == args.ids else make_batches(args.batches, ids), exp_id, sqlite
        )
        if sqlite:
            return raw_sqlite(url.removeprefix("sqlite:///"), rows, unique=unique, units=units)
        return raw_postgres(url, rows, units=units)

    other = "v7" if args.ids == "v4" else "v4"
    print(f"raw idempotent insert ({other}):   {raw(other):>10,.0f} rows/s   {load()}")
    if sqlite:
        print(f"raw insert, no unique index:  {raw(args.ids, False):>10,.0f} rows/s   {load()}")

    # Raw and HTTP alternate, each round on the same rows into a fresh database, so that a
    # change in the machine's load affects both sides of a ratio alike.
    raws: list[float] = []
    raws_units: list[float] = []
    https: list[float] = []
    polling: list[float] = []
    server: Server | None = None
    try:
        for r in range(1, args.rounds + 1):
            raw_rate = raw(args.ids)
            raws.append(raw_rate)
            print(
                f"round {r}: raw idempotent insert ({args.ids}): "
                f"{raw_rate:>10,.0f} rows/s  {load()}"
            )
            raw_units = raw(args.ids, units=True)
            raws_units.append(raw_units)
            print(
                f"round {r}: raw, + exposure_unit upserts:  {raw_units:>10,.0f} events/s  {load()}"
            )
            reset_database(url)
            seed_experiment(url)
            if server is not None:
                server.stop(timeout=20)
            server = Server(
                database_url=url,
                log=tmp / f"server-{kind}.log",
                workers=workers,
                bootstrap_admin_key=ADMIN_KEY,
            )
            server.start()
            key = sdk_key(server.url)
            make_metric(server.url)
            http, totals = http_rate(server.url, key, bodies)
            https.append(http)
            print(
                f"round {r}: HTTP end to end:              {http:>10,.0f} events/s  {load()}  "
                f"ratio {http / raw_rate:.1%} ({http / raw_units:.1%} of raw + exposure_unit)  "
                f"verdicts {totals}"
            )
            if args.pollers:
                # the same rows into a fresh database, while clients read results and report
                server.stop(timeout=20)
                reset_database(url)
                seed_experiment(url)
                server.start()
                key = sdk_key(server.url)
                make_metric(server.url)
                polled, totals = http_rate(server.url, key, bodies, pollers=args.pollers)
                polling.append(polled / http)
                print(
                    f"round {r}: HTTP, {args.pollers} clients polling:  {polled:>10,.0f} events/s"
                    f"  {load()}  {polled / http:.1%} of HTTP alone  answers {totals}"
                )
        ratios = [h / r for h, r in zip(https, raws, strict=True)]
        ratios_units = [h / r for h, r in zip(https, raws_units, strict=True)]
        print(
            f"median over {args.rounds} round(s): raw {median(raws):,.0f} rows/s, "
            f"raw + exposure_unit {median(raws_units):,.0f} events/s, "
            f"HTTP {median(https):,.0f} events/s; "
            f"ratio HTTP / raw {median(ratios):.1%}, "
            f"HTTP / (raw + exposure_unit) {median(ratios_units):.1%}"
            + (
                f"; HTTP with {args.pollers} clients polling results and report /"
                f" HTTP alone {median(polling):.1%} (target >= 90 %)"
                if polling
                else ""
            )
        )
        if args.soak > 0 and server is not None:
            n, start, peak, end = soak(server, key, args.soak)
            print(
                f"soak {args.soak:.0f} s: {n:,} events ({n / args.soak:,.0f}/s); server RSS "
                f"start {start / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
                f"end {end / 1024:.1f} MiB   {load()}"
            )
    finally:
        if server is not None:
            server.stop(timeout=20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=100, help="batches of 1,000 (default 100)")
    parser.add_argument("--ids", choices=["v4", "v7"], default="v4", help="event id kind")
    parser.add_argument("--soak", type=float, default=15.0, help="soak seconds (default 15)")
    parser.add_argument("--rounds", type=int, default=3, help="raw/HTTP rounds (default 3)")
    parser.add_argument("--postgres", metavar="URL", help="also run against this scratch database")
    parser.add_argument(
        "--pollers",
        type=int,
        default=2,
        help="clients reading results and report during a second HTTP run per round (default "
        "2; 0: none)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trialbook-bench-") as tmp:
        run(f"sqlite:///{tmp}/bench.db", 1, args, Path(tmp))
        if args.postgres:
            run(args.postgres, 2, args, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
