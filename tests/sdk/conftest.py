"""Fixtures of the SDK tests (the lead owns tests/conftest.py)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

# Lets the test modules import sdk_helpers under any pytest import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sdk_helpers import BASE_CONFIG

VECTORS_PATH = Path(__file__).resolve().parents[1] / "fixtures" / "assignment_vectors.json"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "network: needs PyPI (pip install into a fresh venv); deselect with -m 'not network' "
        "or set TRIALBOOK_OFFLINE=1",
    )


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    return data


@pytest.fixture
def base_config() -> dict[str, Any]:
    return copy.deepcopy(BASE_CONFIG)
