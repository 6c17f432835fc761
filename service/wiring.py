"""The process, wired in one place: every hook, CLI command and background worker.

Nothing registers itself on import. :func:`service.main.create_app` calls :func:`wire` (and runs
:func:`lifespan`), the CLI (:mod:`service.cli`) calls :func:`install_hooks` and adds
:data:`COMMANDS`; what a reader needs to see the whole process is this file.

- **Hooks** (:func:`install_hooks`): what other domains do at the steps of an experiment's
  lifecycle (the lists of :mod:`service.experiments.hooks`): templates fill defaults, check
  rules and approval; webhooks, results snapshots and insights listen to transitions (in that
  order). The metrics ask the experiments which of them use a metric before its definition
  changes (:data:`service.metrics.service.definition_users`). And the delivery workers are
  woken after a commit that queued a webhook.
- **Commands** (:data:`COMMANDS`): what the domains add to ``trialbook`` beside the CLI's own
  (migrate, serve, keys, openapi: :mod:`service.cli`).
- **Workers** (:func:`workers`): the server's background threads, started by :func:`lifespan`
  in this order and stopped in the reverse one: the SQLite WAL checkpointer, the results
  refresh and health-check schedulers (each unless its interval is 0), the webhook delivery
  worker. At shutdown the event writer's connection is closed too.
- **Credentials** (:data:`CREDENTIAL_RESOLVERS`): who may answer for a request without a Bearer
  key (:func:`service.auth.resolve_other_credential`), in order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from service import calibrate, demo
from service.alerts import commands as alert_commands
from service.alerts import service as alerts
from service.auth import CredentialResolver
from service.config import Settings, get_settings
from service.db import WalCheckpointer, get_engine, open_session
from service.events.writer import stop_writer
from service.experiments import hooks as experiments
from service.experiments.service import experiments_using
from service.insights import service as insights
from service.keys.service import bootstrap_admin
from service.metrics import service as metrics
from service.reports import cli as report_cli
from service.sessions.service import principal_of_cookie
from service.snapshots import service as snapshots
from service.templates import service as templates
from service.throttle import AuthThrottle
from service.warehouse.models import data_source_problem
from service.webhooks import service as webhooks

# ------------------------------------------------------------------------------------------ hooks


def install_hooks() -> None:
    """Set the experiment lifecycle hooks (idempotent: the lists are replaced, not appended)."""
    experiments.protocol_hooks[:] = [templates.protocol_hook]
    experiments.protocol_problem_hooks[:] = [templates.template_problems]
    experiments.data_source_checks[:] = [data_source_problem]
    experiments.update_hooks[:] = [templates.update_hook]
    experiments.phase_hooks[:] = [templates.phase_hook]
    experiments.start_checks[:] = [templates.approval_check]
    experiments.transition_listeners[:] = [
        webhooks.on_transition,
        snapshots.on_transition,
        insights.on_transition,
    ]
    metrics.definition_users[:] = [experiments_using]
    webhooks.wake_workers_after_commit()


# --------------------------------------------------------------------------------------- commands

# Each a Typer command function (its name is the command's, its docstring the help).
COMMANDS: list[Callable[..., int]] = [
    alert_commands.check,
    calibrate.calibrate,
    report_cli.report,
    demo.demo,
]

# ------------------------------------------------------------------------------------ credentials

# Asked in order for a request that carries no Bearer key (service.auth.resolve_other_credential).
CREDENTIAL_RESOLVERS: list[CredentialResolver] = [principal_of_cookie]

# ---------------------------------------------------------------------------------------- workers


class Worker(Protocol):
    """A background thread of the server process."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def workers(settings: Settings) -> list[Worker]:
    """The server's background workers for ``settings``, in start order."""
    found: list[Worker] = [WalCheckpointer(get_engine())]
    if settings.refresh_interval_seconds > 0:
        found.append(snapshots.refresh_scheduler(settings.refresh_interval_seconds))
    if settings.check_interval_seconds > 0:
        found.append(alerts.health_scheduler(settings.check_interval_seconds))
    found.append(webhooks.DeliveryWorker())
    return found


# ------------------------------------------------------------------------------------------- app


def wire(app: Any) -> None:
    """Give a new application its per-app state and the process its hooks."""
    settings = get_settings()
    app.state.auth_throttle = AuthThrottle(
        settings.auth_failure_limit, settings.auth_failure_window_seconds
    )
    app.state.credential_resolvers = list(CREDENTIAL_RESOLVERS)
    install_hooks()


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Store the bootstrap admin key, run the workers, and stop them (reverse order) at the end."""
    settings = get_settings()
    if settings.bootstrap_admin_key:
        with open_session(write=True) as session:
            bootstrap_admin(session, settings.bootstrap_admin_key)
    started: list[Worker] = []
    try:
        for worker in workers(settings):
            worker.start()
            started.append(worker)
        yield
    finally:
        for worker in reversed(started):
            worker.stop()
        stop_writer()
