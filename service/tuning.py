"""The server process's tuning for event ingestion, applied by the server entry point
(:mod:`service.app`) so that a server process is tuned and a test run is not."""

from __future__ import annotations

import gc
import sys

from service.config import get_settings

# Event batches allocate tens of thousands of short-lived objects each: collect the young
# generation less often, and leave the objects of start-up out of every collection (about 8 %
# more events/s in bench/ingest.py: a collection holds the GIL the event writer waits for).
GC_GEN0_THRESHOLD = 20_000


def tune_process() -> None:
    """Set the GIL switch interval and the garbage collector for the server process."""
    # The event writer gives the GIL up around every SQLite statement and waits to get it back
    # from a thread validating the next batch: switch threads every TRIALBOOK_GIL_SWITCH_MS
    # (default 0.5 ms, Python's is 5 ms).
    sys.setswitchinterval(get_settings().gil_switch_ms / 1000)
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
    gc.freeze()  # after start-up: its objects are left out of every later collection
