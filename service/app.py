"""The ASGI application object for uvicorn (``service.app:app``)."""

from service.main import create_app

app = create_app()
