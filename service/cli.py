"""The ``trialbook`` command: the process's own commands (migrate, serve, keys, openapi) and
those the domains add, listed in :mod:`service.wiring`; ``trialbook --help`` lists them all."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from service import wiring
from service.auth import Role
from service.config import get_settings
from service.local import DatabaseNotReadyError, check_database, cli_program

app = typer.Typer(
    name="trialbook",
    help="Trialbook: a self-hosted experimentation platform.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@app.command()
def migrate() -> int:
    """Apply database migrations."""
    from service.migrate import upgrade

    upgrade(get_settings().database_url)
    print("database is at the latest migration")
    return 0


def first_admin_message(key: str, url: str) -> str:
    """What the first start prints under the new admin key: how to use it."""
    program = cli_program()
    return "\n".join(
        [
            "",
            "=" * 78,
            "trialbook: this database had no admin key, so this first start created one.",
            "It is shown this once (only its hash is stored):",
            "",
            f"    {key}",
            "",
            "Use it as a Bearer token:",
            f'    curl -H "Authorization: Bearer {key}" {url}/v1/keys',
            f"    export TRIALBOOK_API_KEY={key}   # read by the commands of README.md",
            "On this machine, the CLI needs no key (it uses this database):",
            "    make demo",
            f"    {program} keys create --role editor --name pm-alice",
            "=" * 78,
            "",
        ]
    )


def create_first_admin(url: str) -> str | None:
    """On a database without an admin key (and no bootstrap key set): create one, print it once.

    Returns the key created, or None when an admin key exists or one is configured.
    """
    from service.db import open_session
    from service.keys.service import ensure_first_admin

    if get_settings().bootstrap_admin_key:
        return None  # the server stores that one at start-up
    with open_session(write=True) as session:
        created = ensure_first_admin(session)
    if created is None:
        return None
    print(first_admin_message(created.key, url), file=sys.stderr, flush=True)
    return created.key


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="default: TRIALBOOK_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: TRIALBOOK_PORT")] = None,
    workers: Annotated[int | None, typer.Option(help="default: TRIALBOOK_WORKERS")] = None,
) -> int:
    """Serve the HTTP API (TRIALBOOK_HOST/PORT/WORKERS)."""
    import uvicorn

    settings = get_settings()
    host = host or settings.host
    port = port or settings.port
    try:
        check_database()
    except DatabaseNotReadyError as exc:
        print(f"trialbook serve: {exc}", file=sys.stderr)
        return 1
    create_first_admin(f"http://{host}:{port}")
    uvicorn.run(
        "service.app:app",
        host=host,
        port=port,
        workers=workers or settings.workers,
        timeout_worker_healthcheck=settings.worker_healthcheck_seconds,
        log_level=settings.log_level,
        proxy_headers=False,
    )
    return 0


@keys_app.command("create")
def keys_create(
    role: Annotated[Role, typer.Option(help="the key's role")],
    name: Annotated[str, typer.Option(help="who or what uses the key")],
) -> int:
    """Create a key and print it once."""
    from service.db import open_session
    from service.keys.service import create_key

    try:
        check_database()
    except DatabaseNotReadyError as exc:
        print(f"trialbook keys create: {exc}", file=sys.stderr)
        return 1
    with open_session(write=True) as session:
        created = create_key(session, name=name, role=role)
    print(created.key)
    print(
        f"# {created.role.value} key '{created.name}' (id {created.id}); shown once",
        file=sys.stderr,
    )
    return 0


@app.command()
def openapi() -> int:
    """Print the OpenAPI document."""
    from service.main import create_app

    print(json.dumps(create_app().openapi(), indent=2, sort_keys=True))
    return 0


for _command in wiring.COMMANDS:
    app.command()(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``trialbook`` with ``argv`` (default: the process's arguments); the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    wiring.install_hooks()
    command = typer.main.get_command(app)
    try:
        result = command.main(
            args=list(argv) if argv is not None else None,
            prog_name="trialbook",
            standalone_mode=False,
        )
    except typer.Abort:  # Ctrl-C at a prompt
        print("Aborted!", file=sys.stderr)
        return 1
    except typer.TyperException as exc:  # a usage error: say what is wrong, exit 2 (as argparse)
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", 2)
        if callable(show):
            show()
        return int(code)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
