"""Fixtures shared by the stats tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REFERENCE_DIR = Path(__file__).parent / "reference"


@pytest.fixture(scope="session")
def reference() -> Callable[[str], Any]:
    """Load ``tests/stats/reference/<name>.json``."""

    def load(name: str) -> Any:
        with (REFERENCE_DIR / f"{name}.json").open(encoding="utf-8") as fh:
            return json.load(fh)

    return load
