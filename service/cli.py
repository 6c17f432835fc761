"""The ``trialbook`` command: migrate, serve, keys, openapi (and more as domains add them)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

from service.config import get_settings

Command = Callable[[argparse.Namespace], int]
# Other domains add sub-commands here: name -> (help, add_arguments, run).
extra_commands: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Command]] = {}


def cmd_migrate(_: argparse.Namespace) -> int:
    from service.migrate import upgrade

    upgrade(get_settings().database_url)
    print("database is at the latest migration")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "service.app:app",
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers or settings.workers,
        log_level=settings.log_level,
        proxy_headers=False,
    )
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from service.db import open_session
    from service.keys.models import Role
    from service.keys.service import create_key

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
