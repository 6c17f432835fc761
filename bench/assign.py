"""Benchmark: pure assignment (``CompiledConfig.evaluate``) vs GrowthBook's Python SDK, same run.

Promise (issue 4): <= 2 us median per evaluation of a running two-variant experiment.

Method: 100,000 distinct unit ids, evaluated in batches of 100; the per-call time of a batch is
its wall time / 100 (``time.perf_counter_ns``); the figure is the median over batches, after one
warm-up pass. GrowthBook (bench-only dependency: ``.venv/bin/pip install growthbook``) evaluates the
same 50/50 experiment as a feature rule on one ``GrowthBook`` instance, ``set_attributes`` +
``eval_feature`` per unit (its documented server-side pattern), with no tracking callback.

Run: ``.venv/bin/python bench/assign.py [--units N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from trialbook.assignment import compile_config, serve_config

CONFIG: dict[str, Any] = {
    "hash_version": 1,
    "layers": {"checkout": {"seed": "k3j4h5", "holdout_fraction": 0.05}},
    "experiments": {
        "new-checkout": {
            "key": "new-checkout",
            "status": "running",
            "seed": "a1b2c3d4",
            "phase": 1,
            "randomization_unit": "user_id",
            "variants": [
                {"key": "control", "weight": 0.5, "is_control": True},
                {"key": "treatment", "weight": 0.5, "is_control": False},
            ],
            "traffic_fraction": 1.0,
            "targeting": None,
            "overrides": {"qa-user-1": "treatment"},
            "layer": None,
            "layer_range": None,
        }
    },
}

BATCH = 100  # calls per timed batch: short enough that few batches span an OS preemption


def median_per_call_us(call: Callable[[str], object], units: list[str]) -> float:
    """Median over batches of (batch wall time / batch size), in microseconds.

    Parameters
    ----------
    call : Callable
        The operation, called once per unit id.
    units : list of str
        Distinct unit ids; a multiple of the batch size.

    Returns
    -------
    float
        Median microseconds per call.
    """
    for unit in units[:BATCH]:  # warm-up
        call(unit)
    per_call: list[float] = []
    clock = time.perf_counter_ns
    for start in range(0, len(units), BATCH):
        batch = units[start : start + BATCH]
        t0 = clock()
        for unit in batch:
            call(unit)
        per_call.append((clock() - t0) / len(batch) / 1000.0)
    return statistics.median(per_call)


def bench_trialbook(units: list[str]) -> float:
    """Median us per ``CompiledConfig.evaluate`` of the running 50/50 experiment."""
    compiled = compile_config(CONFIG)
    evaluate = compiled.evaluate
    return median_per_call_us(lambda unit: evaluate("new-checkout", unit), units)


def bench_trialbook_layered(units: list[str]) -> float:
    """Same, for an experiment in a layer with a holdout and 50 % traffic (three hashes)."""
    config = {
        **CONFIG,
        "experiments": {
            "exp": {
                **CONFIG["experiments"]["new-checkout"],
                "key": "exp",
                "layer": "checkout",
                "layer_range": [0.05, 1.0],
                "traffic_fraction": 0.5,
            }
        },
    }
    evaluate = compile_config(config).evaluate
    return median_per_call_us(lambda unit: evaluate("exp", unit), units)


def bench_trialbook_served(units: list[str]) -> float:
    """Same experiment as CONFIG in its served form (config_version 2: the override hashed), as
    an SDK downloads it: the variant digest doubles as the override key, so still one hash."""
    evaluate = compile_config(serve_config(CONFIG)).evaluate
    return median_per_call_us(lambda unit: evaluate("new-checkout", unit), units)


def bench_trialbook_served_targeting(units: list[str]) -> float:
    """Served form with a hashed ``in`` list on a country attribute (10 countries seen)."""
    exp = {
        **CONFIG["experiments"]["new-checkout"],
        "targeting": {"attribute": "country", "op": "in", "value": ["FR", "DE", "ES", "IT"]},
    }
    evaluate = compile_config(serve_config({**CONFIG, "experiments": {"t": exp}})).evaluate
    countries = ["FR", "DE", "ES", "IT", "US", "GB", "NL", "BE", "PL", "SE"]
    attrs = [{"country": countries[i % len(countries)]} for i in range(len(units))]
    pairs = dict(zip(units, attrs, strict=True))
    return median_per_call_us(lambda unit: evaluate("t", unit, pairs[unit]), units)


# The same experiment as CONFIG, for GrowthBook's Python SDK (bench/sdk.py uses it too).
GROWTHBOOK_FEATURES: dict[str, Any] = {
    "new-checkout": {
        "defaultValue": "control",
        "rules": [
            {
                "key": "new-checkout",
                "variations": ["control", "treatment"],
                "weights": [0.5, 0.5],
                "coverage": 1.0,
                "hashAttribute": "id",
                "hashVersion": 2,
                "seed": "a1b2c3d4",
            }
        ],
    }
}


def growthbook_evaluator(**options: Any) -> Callable[[str], object] | None:
    """One GrowthBook evaluation per call (``options`` go to ``GrowthBook``), or None if absent."""
    try:
        from growthbook import GrowthBook
    except ImportError:
        return None
    gb = GrowthBook(features=GROWTHBOOK_FEATURES, **options)

    def call(unit: str) -> object:
        gb.set_attributes({"id": unit})
        return gb.eval_feature("new-checkout").value

    return call


def bench_growthbook(units: list[str]) -> float | None:
    """Median us per GrowthBook evaluation, or None when growthbook is not installed."""
    call = growthbook_evaluator()
    return None if call is None else median_per_call_us(call, units)


def main() -> None:
    """Print the pure-assignment figures and the same-run GrowthBook baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=100_000)
    args = parser.parse_args()
    units = [f"user-{i:08d}" for i in range(max(BATCH, args.units // BATCH * BATCH))]
    load = os.getloadavg()
    print(
        f"load average before the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"on {os.cpu_count()} CPUs (figures are wall-clock: a busy machine inflates them)"
    )
    ours = bench_trialbook(units)
    served = bench_trialbook_served(units)
    targeted = bench_trialbook_served_targeting(units)
    layered = bench_trialbook_layered(units)
    print(f"trialbook evaluate, running 2-variant experiment: {ours:.3f} us/call (median)")
    print(f"  same, as served (override hashed):              {served:.3f} us/call (median)")
    print(f"  served, + hashed 'in' targeting on country:     {targeted:.3f} us/call (median)")
    print(f"trialbook evaluate, layer + holdout + 50% traffic:  {layered:.3f} us/call (median)")
    worst = max(ours, served)
    print(f"target <= 2 us: {'PASS' if worst <= 2.0 else 'FAIL'}")
    gb = bench_growthbook(units)
    if gb is None:
        print("growthbook not installed: .venv/bin/pip install growthbook for the baseline")
    else:
        print(f"growthbook eval_feature (same run):                {gb:.3f} us/call (median)")
        print(f"ratio growthbook / trialbook: {gb / ours:.1f}x")


if __name__ == "__main__":
    main()
