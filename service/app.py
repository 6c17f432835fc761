"""The ASGI application object for uvicorn (``service.app:app``): the server process.

The process-wide tuning for event ingestion lives here rather than in ``create_app``, so that a
server process is tuned and a test run is not.
"""

import gc
import sys

from service.config import get_settings
from service.main import create_app

app = create_app()

# The event writer gives the GIL up around every SQLite statement and waits to get it back from a
# thread validating the next batch: switch threads every TRIALBOOK_GIL_SWITCH_MS (default 0.5 ms,
# Python's is 5 ms).
sys.setswitchinterval(get_settings().gil_switch_ms / 1000)

# Event batches allocate tens of thousands of short-lived objects each: collect the young
# generation less often, and leave the objects of start-up out of every collection (about 8 %
# more events/s in bench/ingest.py: a collection holds the GIL the event writer waits for).
GC_GEN0_THRESHOLD = 20_000
gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
gc.freeze()
