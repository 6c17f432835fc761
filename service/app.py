"""The ASGI application object for uvicorn (``service.app:app``): the server process, tuned for
event ingestion (:mod:`service.tuning`) here rather than in ``create_app``, so that a server
process is tuned and a test run is not."""

from service.main import create_app
from service.tuning import tune_process

app = create_app()
tune_process()
