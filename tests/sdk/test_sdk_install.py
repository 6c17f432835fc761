"""``pip install ./sdk`` alone into a fresh virtual environment: no heavy dependency comes along.

Needs PyPI for the build backend (setuptools): marked ``network``; skip it offline with
``-m "not network"`` or ``TRIALBOOK_OFFLINE=1``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SDK_DIR = Path(__file__).resolve().parents[2] / "sdk"

_PROBE = """
import importlib.util, json
import trialbook, trialbook.client, trialbook.testing, trialbook.assignment
client = trialbook.Client(None, None, config={"hash_version": 1, "layers": {}, "experiments": {
    "e": {"status": "running", "seed": "s", "phase": 1, "variants": [
        {"key": "a", "weight": 0.5, "is_control": True},
        {"key": "b", "weight": 0.5, "is_control": False}]}}})
result = client.assign("e", "u1")
client.close()
absent = {m: importlib.util.find_spec(m) is None
          for m in ("fastapi", "sqlmodel", "numpy", "pydantic", "httpx", "openfeature")}
typed = importlib.util.find_spec("trialbook").submodule_search_locations[0]
print(json.dumps({"reason": result.reason.value, "absent": absent,
                  "file": trialbook.__file__, "py_typed": __import__("os").path.exists(
                      typed + "/py.typed")}))
"""


@pytest.mark.network
@pytest.mark.skipif(os.environ.get("TRIALBOOK_OFFLINE") == "1", reason="TRIALBOOK_OFFLINE=1")
def test_the_sdk_installs_alone_into_a_fresh_venv(tmp_path: Path) -> None:
    # Build from a copy so the install leaves no build/ or egg-info in the checkout.
    source = tmp_path / "sdk"
    shutil.copytree(
        SDK_DIR, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(source),
        ],
        check=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert installed - {"pip", "setuptools"} == {"trialbook"}
    probe = subprocess.run(
        [str(python), "-c", _PROBE],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    report = json.loads(probe.stdout)
    assert report["reason"] == "split"
    assert all(report["absent"].values()), report["absent"]
    assert str(venv) in report["file"]  # the installed copy, not the checkout
    assert report["py_typed"]
