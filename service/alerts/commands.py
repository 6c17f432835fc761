"""The ``trialbook check`` command (for cron): run the health checks once, send the webhooks."""

from __future__ import annotations

import argparse

from service.cli import extra_commands


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-deliver",
        action="store_true",
        help="only raise alerts; leave their webhooks to the service's delivery worker",
    )


def cmd_check(args: argparse.Namespace) -> int:
    from service.alerts.service import run_checks
    from service.webhooks.service import deliver_due

    report = run_checks()
    print(report.model_dump_json(indent=2))
    if not args.no_deliver:
        # First attempts only; retries come due later and are sent by the next run or a worker.
        while deliver_due() > 0:
            pass
    failed = [c for c in report.experiments if c.error is not None]
    return 1 if failed else 0


extra_commands["check"] = (
    "re-analyse running experiments once and raise health alerts (for cron)",
    _add_arguments,
    cmd_check,
)
