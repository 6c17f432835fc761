"""``trialbook report KEY --out report.html``: save a report as HTML, Markdown or PDF.

A browser reads reports directly after signing in at ``/login``; this command is for files: an
archive, an e-mail attachment. ``--format pdf`` prints the HTML with headless Chromium
(:mod:`service.reports.browser`, Debian's ``chromium``) on A4 or ``--paper letter``.
"""

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
    pdf = "pdf"


class Paper(StrEnum):
    a4 = "a4"
    letter = "letter"


def report(
    experiment: Annotated[str, typer.Argument(help="experiment key")],
    out: Annotated[str | None, typer.Option(help="file to write (default: stdout)")] = None,
    format: Annotated[Format, typer.Option(help="html, md or pdf")] = Format.html,
    paper: Annotated[Paper, typer.Option(help="PDF paper size")] = Paper.a4,
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
    """Save an experiment's report (HTML, Markdown or PDF)."""
    args = argparse.Namespace(
        experiment=experiment, out=out, format=format.value, paper=paper.value, url=url, key=key
    )
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
                params={"format": "md" if args.format == "md" else "html"},
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
    if args.format == "pdf":
        if not args.out:
            print("trialbook report: --format pdf needs --out FILE.pdf", file=sys.stderr)
            return 2
        return _save_pdf(r.text, Path(args.out), getattr(args, "paper", "a4"))
    if args.out:
        Path(args.out).write_text(r.text, encoding="utf-8")
        print(f"saved {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(r.text)
    return 0


def _save_pdf(html: str, out: Path, paper: str) -> int:
    """Print the report's HTML to ``out`` with headless Chromium."""
    import tempfile

    from service.reports.browser import A4, LETTER, BrowserError, Chromium

    try:
        with tempfile.TemporaryDirectory(prefix="tb-pdf-") as tmp, Chromium() as browser:
            page_file = Path(tmp) / "report.html"
            page_file.write_text(html, encoding="utf-8")
            page = browser.new_page()
            page.goto(page_file.as_uri())
            out.write_bytes(page.pdf(LETTER if paper == "letter" else A4))
    except BrowserError as exc:
        print(f"trialbook report: cannot print to PDF ({exc})", file=sys.stderr)
        return 1
    print(f"saved {out}", file=sys.stderr)
    return 0
