"""``trialbook calibrate`` runs small in the suite; the committed table is a full run of it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.cli import main
from stats.calibration import PLAN

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| (?P<method>[^|]+) \| (?P<metric>[^|]+) \| [\d,]+ \| (?P<rates>.*) \|$")
RATE = re.compile(r"(\d\.\d{3}) ± (\d\.\d{3})")


def _rows(text: str) -> list[tuple[str, list[tuple[float, float]]]]:
    out = []
    for line in text.splitlines():
        m = ROW.match(line)
        if m and not line.startswith("| method"):
            rates = [(float(a), float(b)) for a, b in RATE.findall(m["rates"])]
            out.append((m["method"], rates))
    return out


def test_calibrate_writes_the_table_for_every_method_and_metric(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "calibration.md"
    assert main(["calibrate", "--reps", "3", "--seed", "7", "--output", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert "trialbook calibrate --reps 3 --seed 7" in text
    rows = _rows(text)
    assert len(rows) == len(PLAN)
    for _, rates in rows:
        assert len(rates) == 4  # FPR 1 look, FPR 10 looks, coverage, power
        assert all(0.0 <= p <= 1.0 and se >= 0.0 for p, se in rates)


def test_the_committed_calibration_is_a_full_run_within_its_targets() -> None:
    text = (ROOT / "docs" / "calibration.md").read_text(encoding="utf-8")
    made = re.search(r"trialbook calibrate --reps (\d+) --seed (\d+)", text)
    assert made is not None and int(made[1]) >= 500
    rows = _rows(text)
    assert len(rows) == len(PLAN)
    for method, ((fpr1, se1), (fpr10, se10), (cov, sec), _power) in rows:
        # every method holds α at one look, within 3 simulation SE
        assert fpr1 <= 0.05 + 3 * max(se1, 0.01), (method, fpr1)
        if method.startswith(("sequential", "group sequential")):
            assert fpr10 <= 0.05 + 3 * max(se10, 0.01), (method, fpr10)
            assert cov >= 0.95 - 3 * max(sec, 0.01), (method, cov)
        else:
            assert abs(cov - 0.95) <= 3 * max(sec, 0.01), (method, cov)
