"""Several workers come up even when each takes longer to start than uvicorn's 5 s default.

uvicorn's parent pings every worker and kills (then replaces) one that does not answer within
``timeout_worker_healthcheck`` seconds; a worker can answer only once its interpreter is up. On a
busy 2-core CI machine that took over 5 s, so every worker was killed while it started, forever:
``trialbook serve --workers 2`` never answered (two CI runs, the first-start tests, 420 s).

Here the slow start is made certain: a ``sitecustomize`` on the servers' PYTHONPATH sleeps in
every spawned worker (``--multiprocessing-fork`` on its command line) before anything else runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.live import LiveServer, migrate

pytestmark = pytest.mark.xdist_group("first-admin")  # several-worker servers, one at a time

WORKER_START_DELAY_S = 7  # past uvicorn's default of 5 s

SITECUSTOMIZE = f"""
import sys, time
if "--multiprocessing-fork" in sys.argv:
    time.sleep({WORKER_START_DELAY_S})
"""


@pytest.mark.parametrize("cli", [True, False], ids=["trialbook-serve", "uvicorn"])
def test_workers_slower_to_start_than_five_seconds_are_not_killed(
    tmp_path: Path, cli: bool
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    url = f"sqlite:///{tmp_path / 'slow.db'}"
    migrate(url)
    with LiveServer(
        database_url=url,
        log=tmp_path / "server.log",
        workers=2,
        cli=cli,
        env={"PYTHONPATH": path},
        bootstrap_admin_key="tb_slow_worker_start_test_0123456789abcdef",
        log_level="info",  # uvicorn logs "Child process [N] died" at info
    ) as server:
        pass  # __enter__ waits for /healthz; before the fix the workers never answered
    assert "died" not in server.log.read_text(errors="replace")
