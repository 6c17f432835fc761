"""Statistical quality of the bucketing: uniformity, independence, disjointness, stability."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from scipy import stats
from sdk_helpers import make_config, make_experiment
from trialbook.assignment import Reason, compile_config

N_UNITS = 1_000_000
SEEDS = ["a1b2c3d4", "zz9", "seed-X", "k3j4h5", "p0"]
WEIGHTS = [0.1, 0.3, 0.6]
ALPHA = 0.001


def _three_way(seed: str, traffic: float = 1.0) -> dict[str, Any]:
    return make_config(
        make_experiment(
            seed=seed,
            traffic_fraction=traffic,
            variants=[
                {"key": "a", "weight": 0.1, "is_control": True},
                {"key": "b", "weight": 0.3, "is_control": False},
                {"key": "c", "weight": 0.6, "is_control": False},
            ],
        )
    )


def _variant_counts(seed: str, units: list[str], traffic: float = 1.0) -> dict[str, int]:
    evaluate = compile_config(_three_way(seed, traffic)).evaluate
    counts: dict[str, int] = {}
    for unit in units:
        result = evaluate("exp", unit)
        key = result.variant if result.in_experiment else "out"
        counts[key] = counts.get(key, 0) + 1  # type: ignore[index, arg-type]
    return counts


@pytest.fixture(scope="module")
def million_units() -> list[str]:
    return [f"user-{i}" for i in range(N_UNITS)]


@pytest.mark.parametrize("seed", SEEDS)
def test_a_million_units_split_like_the_weights(seed: str, million_units: list[str]) -> None:
    counts = _variant_counts(seed, million_units)
    observed = np.array([counts.get("a", 0), counts.get("b", 0), counts.get("c", 0)])
    assert observed.sum() == N_UNITS
    # Pearson chi-square goodness of fit against the configured weights (scipy).
    p_value = stats.chisquare(observed, f_exp=np.array(WEIGHTS) * N_UNITS).pvalue
    assert p_value > ALPHA, (seed, observed)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_million_units_respect_traffic_037_and_the_weights_inside(
    seed: str, million_units: list[str]
) -> None:
    counts = _variant_counts(seed, million_units, traffic=0.37)
    inside = counts.get("a", 0) + counts.get("b", 0) + counts.get("c", 0)
    # Exact binomial test of the share of units let in (scipy).
    p_traffic = stats.binomtest(inside, N_UNITS, 0.37).pvalue
    assert p_traffic > ALPHA, (seed, inside)
    observed = np.array([counts.get("a", 0), counts.get("b", 0), counts.get("c", 0)])
    p_split = stats.chisquare(observed, f_exp=np.array(WEIGHTS) * inside).pvalue
    assert p_split > ALPHA, (seed, observed)


def test_experiments_in_different_layers_are_independent() -> None:
    layers = {
        "l1": {"seed": "L1", "holdout_fraction": 0.0},
        "l2": {"seed": "L2", "holdout_fraction": 0.0},
    }
    config = make_config(
        make_experiment("e1", seed="s1", layer="l1", layer_range=[0.0, 1.0]),
        make_experiment(
            "e2",
            seed="s2",
            layer="l2",
            layer_range=[0.0, 1.0],
            variants=[
                {"key": "control", "weight": 0.2, "is_control": True},
                {"key": "x", "weight": 0.3, "is_control": False},
                {"key": "y", "weight": 0.5, "is_control": False},
            ],
        ),
        layers=layers,
    )
    evaluate = compile_config(config).evaluate
    index1 = {"control": 0, "treatment": 1}
    index2 = {"control": 0, "x": 1, "y": 2}
    table = np.zeros((2, 3), dtype=np.int64)
    for i in range(200_000):
        unit = f"u{i}"
        table[index1[evaluate("e1", unit).variant], index2[evaluate("e2", unit).variant]] += 1  # type: ignore[index]
    # Contingency chi-square test of independence (scipy) on the 2x3 table.
    result = stats.chi2_contingency(table)
    assert result.pvalue > ALPHA, table


def test_experiments_in_one_layer_are_disjoint_and_the_holdout_is_in_none() -> None:
    layers = {"checkout": {"seed": "k3j4h5", "holdout_fraction": 0.1}}
    ranges = {"e1": [0.1, 0.4], "e2": [0.4, 0.7], "e3": [0.7, 1.0]}
    config = make_config(
        *(make_experiment(k, seed=k, layer="checkout", layer_range=r) for k, r in ranges.items()),
        layers=layers,
    )
    evaluate = compile_config(config).evaluate
    n = 100_000
    per_experiment = dict.fromkeys(ranges, 0)
    holdout = 0
    for i in range(n):
        unit = f"u{i}"
        results = {k: evaluate(k, unit) for k in ranges}
        inside = [k for k, r in results.items() if r.in_experiment]
        assert len(inside) <= 1, (unit, inside)
        if inside:
            per_experiment[inside[0]] += 1
        else:
            assert all(r.reason is Reason.HOLDOUT for r in results.values())
            holdout += 1
    observed = np.array([holdout, *per_experiment.values()])
    p_value = stats.chisquare(observed, f_exp=np.array([0.1, 0.3, 0.3, 0.3]) * n).pvalue
    assert p_value > ALPHA, observed


STABILITY_UNITS = ["user-1", "ünïcødé-Ω", "用户-42", "🙂", "", "a:b", "Zoë", "İstanbul"]
_CHILD = """
import json, sys
from trialbook.assignment import compile_config
config = json.loads(sys.argv[1])
compiled = compile_config(config)
units = json.loads(sys.argv[2])
out = [[compiled.evaluate(k, u).variant, compiled.evaluate(k, u).reason.value]
       for k in sorted(config["experiments"]) for u in units]
print(json.dumps(out))
"""


def test_assignments_are_stable_across_processes_and_hash_seeds() -> None:
    config = make_config(
        make_experiment("e1", traffic_fraction=0.5),
        make_experiment("e2", seed="zz9", layer="checkout", layer_range=[0.05, 0.6]),
    )
    units = STABILITY_UNITS + [f"u{i}" for i in range(200)]
    outputs = set()
    for hash_seed in ("0", "1", "12345", "random"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONUTF8": "0", "LC_ALL": "C"}
        completed = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(config), json.dumps(units)],
            capture_output=True,
            text=True,
            encoding="utf-8",
            env=env,
            check=True,
        )
        outputs.add(completed.stdout)
    assert len(outputs) == 1
    compiled = compile_config(config)
    here = [
        [compiled.evaluate(k, u).variant, compiled.evaluate(k, u).reason.value]
        for k in ("e1", "e2")
        for u in units
    ]
    assert json.loads(outputs.pop()) == here
