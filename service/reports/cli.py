"""``trialbook report KEY --out report.html``: save a report as HTML, Markdown or PDF.

A browser reads reports directly after signing in at ``/login``; this command is for files: an
archive, an e-mail attachment. ``--format pdf`` prints the HTML with headless Chromium
(:mod:`service.reports.browser`, Debian's ``chromium``) on A4 or ``--paper letter``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from service.demo import (
    DEFAULT_URL,
    api_key_from_env,
    no_key_message,
    resolve_key,
    unknown_key_message,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``trialbook report``."""
    p.add_argument("experiment", help="experiment key")
    p.add_argument("--out", help="file to write (default: stdout)")
    p.add_argument("--format", choices=["html", "md", "pdf"], default="html")
    p.add_argument("--paper", choices=["a4", "letter"], default="a4", help="PDF paper size")
    p.add_argument("--url", default=os.environ.get("TRIALBOOK_URL", DEFAULT_URL))
    p.add_argument(
        "--key",
        default=None,
        help="viewer (or higher) API key (default: $TRIALBOOK_API_KEY or "
        "$TRIALBOOK_BOOTSTRAP_ADMIN_KEY; on the server machine, a one-run key from its database)",
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of ``trialbook report``."""
    import logging

    import httpx  # only this command needs it; the server must start without it

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request

    from service.cli import DatabaseNotReadyError

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


def register() -> None:
    """Add ``trialbook report`` and ``trialbook demo`` to the CLI."""
    from service import demo
    from service.cli import extra_commands

    extra_commands["report"] = (
        "save an experiment's report (HTML or Markdown)",
        add_arguments,
        run,
    )
    extra_commands["demo"] = (
        "create and simulate a demo experiment against a running server",
        demo.add_arguments,
        demo.run,
    )


register()
