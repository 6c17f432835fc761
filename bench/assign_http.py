"""Benchmark: ``POST /v1/assign`` (one experiment) vs a bare FastAPI endpoint, same run.

Promise (issue 4): the assign endpoint serves at least half the request rate of a bare FastAPI
endpoint returning the same JSON, under the same server settings.

Method
------
- A scratch SQLite database is migrated; the Trialbook server (``service.app:app``) and a bare
  FastAPI app (:data:`bare_app` below: ``async def`` returning the same JSON as a constant dict)
  each run in their own uvicorn process with the same settings: one worker, ``--log-level
  warning``, ``--no-access-log``, on 127.0.0.1.
- Through the API the bench creates a metric, a two-variant experiment, starts it and makes an
  ``sdk`` key; every Trialbook request authenticates with it (a database lookup per request, as in
  production) and re-checks the config version (one aggregate query).
- Load: a small asyncio client on raw keep-alive HTTP/1.1 connections (hand-written requests,
  ``Content-Length`` framing: far cheaper per request than an HTTP library, so the client does not
  cap the bare endpoint), ``--connections`` concurrent connections (default 8), each sending
  ``POST /v1/assign {"unit_id": "u<i>", "experiments": [...]}`` with a new unit per request and
  waiting for the answer. The servers alternate in ``--rounds`` (default 3) rounds, each a 1 s
  warm-up then ``--seconds / --rounds`` measured (``--seconds`` default 10 per server), so load
  from other processes hits both alike. Rate = completed 200 responses / measured seconds; the
  ratio is mean(assign) / mean(bare).

Run: ``.venv/bin/python bench/assign_http.py [--seconds 10] [--connections 8]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: tests.support
from tests.support.live import LiveServer, free_port, migrate

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "bench-checkout"
ADMIN_KEY = "tb_bench_admin_key_assign_http"
UVICORN_FLAGS = ("--workers", "1", "--log-level", "warning", "--no-access-log")

# The bare endpoint answers this constant; it is replaced at start-up (environment) by the JSON the
# Trialbook server actually returns, so both send the same bytes' worth of JSON.
BARE_BODY: dict[str, Any] = json.loads(
    os.environ.get(
        "BENCH_BARE_BODY",
        '{"assignments":[{"experiment":"bench-checkout","variant":"control",'
        '"in_experiment":true,"reason":"split"}]}',
    )
)
bare_app = FastAPI()


@bare_app.post("/v1/assign")
async def bare_assign() -> dict[str, Any]:
    """The same JSON, no auth, no database, no assignment."""
    return BARE_BODY


def _start_bare(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """The bare FastAPI app under uvicorn; it has no ``/healthz``, so wait for the TCP port."""
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "assign_http:bare_app"),
            *("--app-dir", str(ROOT / "bench")),
            *("--host", "127.0.0.1", "--port", str(port), *UVICORN_FLAGS),
        ],
        env=env,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bare app did not start") from None
            time.sleep(0.1)


async def _connection(
    port: int, path: str, headers: str, body_of: Any, stop: float, counter: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    try:
        while time.monotonic() < stop:
            body = body_of(i)
            i += 1
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if status == 200:
                counter[0] += 1
            else:
                counter[1] += 1
    finally:
        writer.close()


async def _load(port: int, headers: str, seconds: float, connections: int, tag: int) -> float:
    def body_of(conn: int) -> Any:
        return lambda i: json.dumps(
            {"unit_id": f"u{tag}-{conn}-{i}", "experiments": [EXPERIMENT]}
        ).encode()

    warm = [0, 0]
    stop = time.monotonic() + 1.0
    await asyncio.gather(
        *(
            _connection(port, "/v1/assign", headers, body_of(c), stop, warm)
            for c in range(connections)
        )
    )
    counter = [0, 0]
    start = time.monotonic()
    stop = start + seconds
    await asyncio.gather(
        *(
            _connection(port, "/v1/assign", headers, body_of(c), stop, counter)
            for c in range(connections)
        )
    )
    elapsed = time.monotonic() - start
    if counter[1]:
        raise RuntimeError(f"{counter[1]} non-200 answers")
    return counter[0] / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="trialbook-bench-"))
    database_url = f"sqlite:///{tmp / 'bench.db'}"
    migrate(database_url)
    server = LiveServer(
        database_url=database_url, log=tmp / "server.log", bootstrap_admin_key=ADMIN_KEY
    )
    if server.argv()[-len(UVICORN_FLAGS) :] != list(UVICORN_FLAGS):
        raise RuntimeError("both servers must run with the same uvicorn settings")
    bare: subprocess.Popen[bytes] | None = None
    try:
        server.start(timeout=30)
        port = server.port
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        with httpx.Client(base_url=server.url, headers=admin) as http:
            metric = {"key": "conversion", "name": "Conversion", "type": "binomial"}
            http.post("/v1/metrics", json=metric | {"event": "purchase"}).raise_for_status()
            http.post(
                "/v1/experiments",
                json={
                    "key": EXPERIMENT,
                    "title": "Bench checkout",
                    "owner": "bench",
                    "hypothesis": "assignment is fast",
                    "variants": [
                        {"key": "control", "weight": 0.5, "is_control": True},
                        {"key": "treatment", "weight": 0.5},
                    ],
                    "primary_metric": {"metric": "conversion", "mde": 0.1},
                },
            ).raise_for_status()
            http.post(f"/v1/experiments/{EXPERIMENT}/start").raise_for_status()
            sdk_key = http.post("/v1/keys", json={"name": "bench", "role": "sdk"}).json()["key"]
            sample = http.post(
                "/v1/assign",
                json={"unit_id": "u-sample", "experiments": [EXPERIMENT]},
                headers={"Authorization": f"Bearer {sdk_key}"},
            )
            sample.raise_for_status()
        bare, bare_port = _start_bare(os.environ | {"BENCH_BARE_BODY": sample.text})

        auth = f"Authorization: Bearer {sdk_key}\r\n"
        # Alternate the two servers in rounds so that load from other processes on the machine
        # hits both alike; each round measures seconds / rounds per server.
        share = args.seconds / args.rounds
        bare_rates, tb_rates = [], []
        for r in range(args.rounds):
            bare_rates.append(asyncio.run(_load(bare_port, "", share, args.connections, 2 * r)))
            tb_rates.append(asyncio.run(_load(port, auth, share, args.connections, 2 * r + 1)))
    finally:
        server.stop()
        if bare is not None:
            bare.terminate()
            bare.wait(timeout=15)

    print(
        f"uvicorn {' '.join(UVICORN_FLAGS)}; {args.connections} keep-alive connections; "
        f"{args.rounds} alternating rounds, {args.seconds:g} s per server; cpus={os.cpu_count()}"
    )
    for r, (b, t) in enumerate(zip(bare_rates, tb_rates, strict=True)):
        print(f"  round {r + 1}: bare {b:7.0f} req/s   assign {t:7.0f} req/s   {t / b:.2f}")
    bare_rate = statistics.mean(bare_rates)
    tb_rate = statistics.mean(tb_rates)
    print(f"bare FastAPI endpoint (same JSON):      {bare_rate:8.0f} req/s")
    print(f"POST /v1/assign (1 experiment, SQLite): {tb_rate:8.0f} req/s")
    ratio = tb_rate / bare_rate
    print(f"ratio: {ratio:.2f} (target >= 0.50: {'met' if ratio >= 0.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
