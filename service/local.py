"""What the commands run on the server machine share: how the CLI was invoked, the configured
database checked before use, and a one-run API key minted straight into it."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from service.config import get_settings


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
    with open_session(write=True) as session:
        created = create_key(
            session, name=f"{purpose} (local, revoked after the run)", role=Role(role)
        )
    try:
        yield created.key
    finally:
        with open_session(write=True) as session:
            row = session.get(ApiKey, created.id)
            if row is not None and row.revoked_at is None:
                row.revoked_at = utcnow()
                session.add(row)
                session.commit()
