"""A daemon thread that runs one task every ``interval`` seconds (the scheduled health checks and
results refreshes): a task that raises is logged and the next pass runs as usual."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

log = logging.getLogger(__name__)


class PeriodicTask:
    """Run ``task`` every ``interval`` seconds on a daemon thread named ``name``."""

    def __init__(self, name: str, interval: float, task: Callable[[], None]) -> None:
        self.name = name
        self.interval = interval
        self._task = task
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._task()
            except Exception:
                log.exception("%s pass failed", self.name)


@asynccontextmanager
async def running(task: PeriodicTask | None) -> AsyncIterator[None]:
    """A lifespan that starts ``task`` (None: nothing to run) and stops it at shutdown."""
    if task is not None:
        task.start()
    try:
        yield
    finally:
        if task is not None:
            task.stop()
