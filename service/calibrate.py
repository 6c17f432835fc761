"""The ``trialbook calibrate`` command: simulate every method and metric type and write
``docs/calibration.md`` (``stats/calibration.py`` does the simulation)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_OUTPUT = Path("docs/calibration.md")


def calibrate(
    reps: Annotated[int, typer.Option(help="replications per rate")] = 1000,
    seed: Annotated[int, typer.Option(help="numpy seed")] = 20261201,
    output: Annotated[Path, typer.Option(help="Markdown file to write")] = DEFAULT_OUTPUT,
) -> int:
    """Simulate A/A and A/B experiments for every method and write docs/calibration.md."""
    from stats.calibration import render_markdown, run_calibration

    if reps < 1:
        print("--reps must be >= 1", file=sys.stderr)
        return 2
    started = time.monotonic()
    rows = run_calibration(reps=reps, seed=seed)
    command = f"trialbook calibrate --reps {reps} --seed {seed}"
    text = render_markdown(rows, command=command, reps=reps, seed=seed)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(f"wrote {output} ({len(rows)} rows, {time.monotonic() - started:.0f} s)")
    return 0
