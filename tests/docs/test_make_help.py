"""``make help`` lists every target of the Makefile with its one line."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.support.live import REPO


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_lists_every_phony_target_with_a_description() -> None:
    makefile = (REPO / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.MULTILINE)
    assert phony is not None
    targets = phony.group(1).split()
    done = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    listed = {}
    for line in done.stdout.splitlines():
        m = re.match(r"^\s+make (\S+)\s+(\S.*)$", line)
        if m:
            listed[m.group(1)] = m.group(2)
    assert sorted(listed) == sorted(targets), done.stdout
    assert {"run", "test", "demo"} <= set(listed)
