"""``trialbook report KEY --out report.html``: save a report (it needs the API key as a header,
which a browser does not send by itself; open the saved file instead)."""

from __future__ import annotations

import argparse
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from service.demo import (
    DEFAULT_URL,
    api_key_from_env,
    no_key_message,
    resolve_key,
    unknown_key_message,
)


class Format(StrEnum):
    html = "html"
    md = "md"


def report(
    experiment: Annotated[str, typer.Argument(help="experiment key")],
    out: Annotated[str | None, typer.Option(help="file to write (default: stdout)")] = None,
    format: Annotated[Format, typer.Option(help="html or md")] = Format.html,
    url: Annotated[str, typer.Option(envvar="TRIALBOOK_URL", help="server URL")] = DEFAULT_URL,
    key: Annotated[
        str | None,
        typer.Option(
            help="viewer (or higher) API key (default: $TRIALBOOK_API_KEY or "
            "$TRIALBOOK_BOOTSTRAP_ADMIN_KEY; on the server machine, a one-run key from its "
            "database)"
        ),
    ] = None,
) -> int:
    """Save an experiment's report (HTML or Markdown)."""
    args = argparse.Namespace(experiment=experiment, out=out, format=format.value, url=url, key=key)
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``trialbook report``."""
    import logging

    import httpx  # only this command needs it; the server must start without it

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request

    from service.local import DatabaseNotReadyError

    local = not (args.key or api_key_from_env())
    try:
        with resolve_key(args.key, "viewer", "trialbook report") as key:
            r = httpx.get(
                f"{args.url.rstrip('/')}/v1/experiments/{args.experiment}/report",
                params={"format": args.format},
                headers={"Authorization": f"Bearer {key}"},
                timeout=120.0,
            )
    except DatabaseNotReadyError as exc:
        print(no_key_message("report", exc), file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:
        print(f"trialbook report: cannot reach {args.url} ({exc})", file=sys.stderr)
        return 1
    if r.status_code == 401:
        print(unknown_key_message("report", args.url, local), file=sys.stderr)
        return 1
    if r.status_code != 200:
        print(f"trialbook report: HTTP {r.status_code}: {r.text[:500]}", file=sys.stderr)
        return 1
    if args.out:
        Path(args.out).write_text(r.text, encoding="utf-8")
        print(f"saved {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(r.text)
    return 0
