"""The ``trialbook calibrate`` command: simulate every method and metric type and write
``docs/calibration.md`` (``stats/calibration.py`` does the simulation)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from service.cli import extra_commands

DEFAULT_OUTPUT = Path("docs/calibration.md")


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reps", type=int, default=1000, help="replications per rate")
    parser.add_argument("--seed", type=int, default=20261201, help="numpy seed")
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown file to write"
    )


def cmd_calibrate(args: argparse.Namespace) -> int:
    from stats.calibration import render_markdown, run_calibration

    if args.reps < 1:
        print("--reps must be >= 1", file=sys.stderr)
        return 2
    started = time.monotonic()
    rows = run_calibration(reps=args.reps, seed=args.seed)
    command = f"trialbook calibrate --reps {args.reps} --seed {args.seed}"
    text = render_markdown(rows, command=command, reps=args.reps, seed=args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} ({len(rows)} rows, {time.monotonic() - started:.0f} s)")
    return 0


extra_commands["calibrate"] = (
    "simulate A/A and A/B experiments for every method and write docs/calibration.md",
    _add_arguments,
    cmd_calibrate,
)
