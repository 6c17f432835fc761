"""Benchmark: ``Client.assign`` with exposure logging, ``Client.track``, and bounded memory.

Promises (issue 6): ``client.assign`` with exposure logging <= 2 us median per call over 100,000
distinct units; ``client.track`` <= 2 us per call on the caller's thread; memory after 1,000,000
distinct units bounded by the dedup cache (and the event queue).

Method: the client runs as in production (background sender thread on), with an in-process
transport that answers ``200`` at once, so the sender's JSON work competes for the GIL as it would
with a real server. Per-call figures are medians over batches of 100 calls
(``time.perf_counter_ns``), after a warm-up. GrowthBook's Python SDK (bench-only: ``.venv/bin/pip
install growthbook``) evaluates the same 50/50 experiment with a tracking callback in the same run.
Memory is the process RSS (``/proc/self/statm``) after 100,000 / 500,000 / 1,000,000 distinct
units, and the sizes of the dedup cache and queue.

Run: ``.venv/bin/python bench/sdk.py``.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from typing import Any

from assign import (  # bench/assign.py, same folder (run as a script)
    CONFIG,
    growthbook_evaluator,
    median_per_call_us,
)
from trialbook import Client
from trialbook.testing import MockTransport, Request, Response

WARMUP = 1000  # units used only to warm up; the next 100,000 are measured


def _accept(request: Request) -> Response:
    if request.method == "GET":
        return Response(200, {"etag": '"bench"'}, json.dumps(CONFIG).encode())
    count = len(json.loads(request.body or b'{"events": []}')["events"])
    return Response(200, {}, json.dumps({"accepted": count}).encode())


def make_client(**kwargs: Any) -> Client:
    """A production-like client talking to an instant in-process server."""
    return Client(
        "http://bench.local",
        "sdk-key",
        config=CONFIG,
        transport=MockTransport(_accept),
        refresh_interval=3600,
        **kwargs,
    )


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_growthbook(units: list[str]) -> float | None:
    """Median us per GrowthBook evaluation with its tracking callback, or None if absent."""
    viewed: list[object] = []

    def on_viewed(experiment: object, result: object, *args: object, **kwargs: object) -> None:
        viewed.append(result)  # the "exposure" GrowthBook hands to the app

    call = growthbook_evaluator(on_experiment_viewed=on_viewed)
    if call is None:
        return None
    for unit in units[:WARMUP]:
        call(unit)
    return median_per_call_us(call, units[WARMUP:])


def main() -> None:
    """Print the SDK figures beside the same-run GrowthBook baseline."""
    units = [f"user-{i:08d}" for i in range(101_000)]
    load = os.getloadavg()
    print(
        f"load average before the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"on {os.cpu_count()} CPUs (figures are wall-clock: a busy machine inflates them)"
    )

    client = make_client()
    assign = client.assign
    for unit in units[:WARMUP]:  # warm-up (these units are not measured again)
        assign("new-checkout", unit)
    ours = median_per_call_us(lambda unit: assign("new-checkout", unit), units[WARMUP:])
    stats = client.stats()
    print(f"client.assign + exposure logging, 100,000 distinct units: {ours:.3f} us/call (median)")
    print(
        f"  exposures logged {stats.exposures_logged}, target <= 2 us: "
        f"{'PASS' if ours <= 2.0 else 'FAIL'}"
    )
    # The dedup cache (100,000 entries in two generations) still holds the newest 50,000 units.
    recent = units[-40_000:]
    repeat = median_per_call_us(lambda unit: assign("new-checkout", unit), recent)
    print(f"client.assign, units already exposed (dedup hit):     {repeat:.3f} us/call (median)")

    track = client.track
    tracked = median_per_call_us(lambda unit: track("purchase", unit, 1.0), units[WARMUP:])
    print(f"client.track:                                         {tracked:.3f} us/call (median)")
    print(f"  target <= 2 us: {'PASS' if tracked <= 2.0 else 'FAIL'}")
    client.flush(30)
    final = client.stats()
    print(f"  sent {final.events_sent}, dropped (queue full) {final.dropped.queue_full}")
    client.close()

    gb = bench_growthbook(units)
    if gb is None:
        print("growthbook not installed: .venv/bin/pip install growthbook for the baseline")
    else:
        print(f"growthbook eval_feature + tracking callback (same run): {gb:.3f} us/call (median)")
        print(f"ratio growthbook / trialbook assign: {gb / ours:.1f}x")

    dedup = 100_000
    queue = 100_000
    memory_client = make_client(dedup_cache_size=dedup, max_queue_size=queue)
    assign = memory_client.assign
    gc.collect()
    baseline = rss_mib()
    print(
        f"memory: RSS before {baseline:.1f} MiB (dedup cache {dedup:,} entries, "
        f"queue {queue:,} events)"
    )
    done = 0
    for checkpoint in (100_000, 500_000, 1_000_000):
        for i in range(done, checkpoint):
            assign("new-checkout", f"mem-{i}")
        done = checkpoint
        memory_client.flush(60)
        gc.collect()
        cache = len(memory_client._seen_new) + len(memory_client._seen_old)
        print(
            f"  after {checkpoint:>9,} distinct units: RSS {rss_mib():7.1f} MiB "
            f"(+{rss_mib() - baseline:.1f}), dedup entries {cache:,}, "
            f"queued {memory_client.stats().queued:,}"
        )
    seen = (memory_client._seen_new, memory_client._seen_old)
    cache_bytes = sum(sys.getsizeof(g) + sum(sys.getsizeof(k) for k in g) for g in seen)
    entries = sum(len(g) for g in seen)
    print(
        f"  dedup cache now: {entries:,} entries, {cache_bytes / 2**20:.1f} MiB "
        f"({cache_bytes / max(entries, 1):.0f} bytes/entry); bound {dedup:,} entries "
        f"= {dedup * cache_bytes / max(entries, 1) / 2**20:.1f} MiB"
    )
    memory_client.close()


if __name__ == "__main__":
    main()
