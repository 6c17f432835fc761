"""A real Trialbook server in a subprocess, for end-to-end tests and benchmarks.

Tests and benches that need the HTTP wire (a second process, ``kill -9``, several workers, a real
client library) start the server with :class:`LiveServer` instead of each keeping its own copy::

    from tests.support.live import LiveServer, migrate

    migrate(url)
    with LiveServer(database_url=url, log=tmp / "server.log", bootstrap_admin_key=key) as server:
        httpx.get(server.url + "/healthz")

The server runs in its own process group (so :meth:`LiveServer.kill` reaches every worker), writes
stdout and stderr to ``log`` (appended, so a restart keeps the first run's lines), and never runs
the background health-check scheduler (``TRIALBOOK_CHECK_INTERVAL_SECONDS=0``).

Errors: :class:`LiveServerError` (a ``RuntimeError``) when the server exits before it answers,
does not answer in time, or a migration fails; its message ends with the log tail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from service.config import Settings

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


class LiveServerError(RuntimeError):
    """The live server (or its migration) failed; the message carries the log tail."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nobody listens on right now.

    Returns
    -------
    int
        A port number chosen by the kernel (bind to port 0, then release it).

    Notes
    -----
    Another process may take the port between this call and the server's bind; on a test machine
    that race is rare enough, and :meth:`LiveServer.start` then fails with the log tail.
    """
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def migrate(
    database_url: str, *, env: Mapping[str, str] | None = None, timeout: float = 120
) -> None:
    """Bring the database at ``database_url`` to the latest migration, in a subprocess.

    Runs ``python -m service.cli migrate`` (what an operator runs), so Alembic's logging set-up
    and the settings cache of the calling process are left alone.

    Parameters
    ----------
    database_url : str
        SQLAlchemy URL of the database (``sqlite:///path`` or ``postgresql://...``).
    env : Mapping[str, str], optional
        Extra environment of the subprocess, on top of ``os.environ``.
    timeout : float, default 120
        Seconds the migration may take.

    Raises
    ------
    LiveServerError
        If the command exits non-zero; the message carries its output.
    """
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "migrate"],
        cwd=REPO,
        env={**os.environ, **(env or {}), "TRIALBOOK_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise LiveServerError(
            f"migrate exited {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}"
        )


@dataclass
class LiveServer:
    """A Trialbook server in a subprocess of its own process group.

    Parameters
    ----------
    database_url : str
        ``TRIALBOOK_DATABASE_URL`` of the server (already migrated: see :func:`migrate`).
    log : pathlib.Path
        File that receives the server's stdout and stderr (appended to).
    workers : int, default 1
        Uvicorn worker processes.
    env : Mapping[str, str]
        Extra environment, applied last (it may override the variables set here).
    port : int
        TCP port on 127.0.0.1; a free one by default. A restart keeps it.
    bootstrap_admin_key : str, optional
        ``TRIALBOOK_BOOTSTRAP_ADMIN_KEY``: an admin key the server creates at start-up.
    log_level : str, default "warning"
        Uvicorn's (and ``TRIALBOOK_LOG_LEVEL``) log level.
    cli : bool, default False
        Start ``python -m service.cli serve`` (the operator's command) rather than
        ``python -m uvicorn service.app:app``.
    """

    database_url: str
    log: Path
    workers: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    bootstrap_admin_key: str | None = None
    log_level: str = "warning"
    cli: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        """Base URL of the server, without a trailing slash."""
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def argv(self) -> list[str]:
        """Return the command line that starts the server.

        Returns
        -------
        list[str]
            ``python -m service.cli serve ...`` or ``python -m uvicorn service.app:app ...``.
        """
        where = ["--host", HOST, "--port", str(self.port), "--workers", str(self.workers)]
        if self.cli:
            return [sys.executable, "-m", "service.cli", "serve", *where]
        return [
            *(sys.executable, "-m", "uvicorn", "service.app:app", *where),
            *("--timeout-worker-healthcheck", str(Settings().worker_healthcheck_seconds)),
            *("--log-level", self.log_level, "--no-access-log"),
        ]

    def environment(self) -> dict[str, str]:
        """Return the environment of the server process.

        Returns
        -------
        dict[str, str]
            ``os.environ`` with the database URL, the bootstrap key (if any), check interval 0,
            log level and workers set, then :attr:`env` on top.
        """
        out = dict(os.environ)
        out.update(
            TRIALBOOK_DATABASE_URL=self.database_url,
            TRIALBOOK_CHECK_INTERVAL_SECONDS="0",  # no health-check scheduler in the background
            TRIALBOOK_LOG_LEVEL=self.log_level,
            TRIALBOOK_WORKERS=str(self.workers),
        )
        if self.bootstrap_admin_key is not None:
            out["TRIALBOOK_BOOTSTRAP_ADMIN_KEY"] = self.bootstrap_admin_key
        out.update(self.env)
        return out

    def start(self, timeout: float = 60) -> None:
        """Start (or restart, on the same port and database) and wait until ``/healthz`` is 200.

        Parameters
        ----------
        timeout : float, default 60
            Seconds to wait for the first healthy answer.

        Raises
        ------
        LiveServerError
            If the server is already running, exits before it answers, or does not answer in
            ``timeout`` seconds (the process group is then killed); the message ends with the
            log tail.
        """
        if self.running:
            raise LiveServerError(f"the server on port {self.port} is already running")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv(),
                cwd=REPO,
                env=self.environment(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill() reaches every worker
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise LiveServerError(f"the server exited with {code}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.kill()
        raise LiveServerError(f"the server did not answer in {timeout:g} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """``kill -9`` the server's whole process group and reap it.

        Raises
        ------
        LiveServerError
            If the server was never started.
        """
        if self.proc is None:
            raise LiveServerError("the server was never started")
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15) -> None:
        """Terminate the server if it runs: SIGTERM, then SIGKILL after ``timeout`` seconds.

        Parameters
        ----------
        timeout : float, default 15
            Seconds a graceful shutdown may take.
        """
        if self.proc is None or self.proc.poll() is not None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log_tail(self, chars: int = 3000) -> str:
        """Return the end of the server's log, for error and assertion messages.

        Parameters
        ----------
        chars : int, default 3000
            How many characters at most.

        Returns
        -------
        str
            The last ``chars`` characters of the log ("" if there is no log yet).
        """
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        # ProcessLookupError: the group is gone already (every member exited).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
