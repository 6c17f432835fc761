"""The ASGI application object for uvicorn (``service.app:app``): the server process."""

import gc

from service.main import create_app

app = create_app()

# Event batches allocate tens of thousands of short-lived objects each: collect the young
# generation less often, and leave the objects of start-up out of every collection (about 8 %
# more events/s in bench/ingest.py: a collection holds the GIL the event writer waits for).
# Here rather than in create_app, so that only a server process is tuned, not a test run.
GC_GEN0_THRESHOLD = 20_000
gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
gc.freeze()
