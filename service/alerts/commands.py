"""The ``trialbook check`` command (for cron): run the health checks once, send the webhooks."""

from __future__ import annotations

from typing import Annotated

import typer


def check(
    no_deliver: Annotated[
        bool,
        typer.Option(
            "--no-deliver",
            help="only raise alerts; leave their webhooks to the service's delivery worker",
        ),
    ] = False,
) -> int:
    """Re-analyse running experiments once and raise health alerts (for cron)."""
    from service.alerts.service import run_checks
    from service.webhooks.service import deliver_due

    report = run_checks()
    print(report.model_dump_json(indent=2))
    if not no_deliver:
        # First attempts only; retries come due later and are sent by the next run or a worker.
        while deliver_due() > 0:
            pass
    failed = [c for c in report.experiments if c.error is not None]
    return 1 if failed else 0
