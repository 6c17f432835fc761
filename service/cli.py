"""The ``trialbook`` command: migrate, serve, keys, openapi (and more as domains add them)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from service.config import get_settings

Command = Callable[[argparse.Namespace], int]
# Other domains add sub-commands here: name -> (help, add_arguments, run).
extra_commands: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Command]] = {}


def cmd_migrate(_: argparse.Namespace) -> int:
    from service.migrate import upgrade

    upgrade(get_settings().database_url)
    print("database is at the latest migration")
    return 0


def cli_program() -> str:
    """How this command was invoked (``.venv/bin/trialbook``), for the commands it prints."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "trialbook":
        return argv0
    return f"{sys.executable} -m service.cli"


class DatabaseNotReadyError(Exception):
    """The configured database does not exist or is not migrated (the message says what to run)."""


def check_database() -> None:
    """Refuse a database that does not exist yet (SQLite) or has no tables (never create one).

    Raises
    ------
    DatabaseNotReadyError
        With the command that fixes it.
    """
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url

    from service.db import get_engine, normalize_url

    url = get_settings().database_url
    parsed = make_url(normalize_url(url))
    migrate = f"run `{cli_program()} migrate` (`make run` does it)"
    sqlite_file = parsed.get_backend_name() == "sqlite" and parsed.database not in (
        None,
        "",
        ":memory:",
    )
    if sqlite_file and not Path(str(parsed.database)).exists():
        raise DatabaseNotReadyError(
            f"no database at {url} (from TRIALBOOK_DATABASE_URL); {migrate}"
        )
    try:
        has_keys = inspect(get_engine()).has_table("api_key")
    except Exception as exc:  # connection refused, bad credentials: say which database
        raise DatabaseNotReadyError(f"cannot open the database at {url}: {exc}") from exc
    if not has_keys:
        raise DatabaseNotReadyError(f"the database at {url} is not migrated; {migrate}")


@contextlib.contextmanager
def local_api_key(role: str, purpose: str) -> Iterator[str]:
    """A key minted straight into the configured database for one command, revoked after it.

    What ``trialbook keys create`` does, for the commands run on the server machine (``make demo``,
    ``trialbook report``) when no key is given: no secret is written anywhere, and the key stops
    working when the command ends.

    Raises
    ------
    DatabaseNotReadyError
        When the database is missing or not migrated.
    """
    from service.db import open_session, utcnow
    from service.keys.models import ApiKey, Role
    from service.keys.service import create_key

    check_database()
    session = open_session(write=True)
    try:
        created = create_key(
            session, name=f"{purpose} (local, revoked after the run)", role=Role(role)
        )
    finally:
        session.close()
    try:
        yield created.key
    finally:
        session = open_session(write=True)
        try:
            row = session.get(ApiKey, created.id)
            if row is not None and row.revoked_at is None:
                row.revoked_at = utcnow()
                session.add(row)
                session.commit()
        finally:
            session.close()


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
    session = open_session(write=True)
    try:
        created = ensure_first_admin(session)
    finally:
        session.close()
    if created is None:
        return None
    print(first_admin_message(created.key, url), file=sys.stderr, flush=True)
    return created.key


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    host = args.host or settings.host
    port = args.port or settings.port
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
        workers=args.workers or settings.workers,
        log_level=settings.log_level,
        proxy_headers=False,
    )
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from service.db import open_session
    from service.keys.models import Role
    from service.keys.service import create_key

    try:
        check_database()
    except DatabaseNotReadyError as exc:
        print(f"trialbook keys create: {exc}", file=sys.stderr)
        return 1
    session = open_session(write=True)
    try:
        created = create_key(session, name=args.name, role=Role(args.role))
    finally:
        session.close()
    print(created.key)
    print(
        f"# {created.role.value} key '{created.name}' (id {created.id}); shown once",
        file=sys.stderr,
    )
    return 0


def cmd_openapi(_: argparse.Namespace) -> int:
    from service.main import create_app

    print(json.dumps(create_app().openapi(), indent=2, sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trialbook", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    serve = sub.add_parser("serve", help="serve the HTTP API (TRIALBOOK_HOST/PORT/WORKERS)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.set_defaults(func=cmd_serve)
    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys", required=True)
    create = keys.add_parser("create", help="create a key and print it once")
    create.add_argument("--role", required=True, choices=["admin", "editor", "sdk", "viewer"])
    create.add_argument("--name", required=True)
    create.set_defaults(func=cmd_keys_create)
    sub.add_parser("openapi", help="print the OpenAPI document").set_defaults(func=cmd_openapi)
    for name, (help_text, add_args, run) in extra_commands.items():
        p = sub.add_parser(name, help=help_text)
        add_args(p)
        p.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    import service.plugins  # noqa: F401  (domains register their commands and hooks)

    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
