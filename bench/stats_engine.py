"""Bench: one experiment, 4 arms x 20 metrics, everything on, from summaries.

Run: ``.venv/bin/python bench/stats_engine.py``. Prints the median wall time of
``stats.analyze`` (CUPED, sequential, Bayesian, guardrails, Holm, SRM) beside a
same-run baseline: scipy's ``ttest_ind_from_stats`` called once per comparison.
Target: under 20 ms median.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stats import AnalysisSettings, MeanSummary, MetricInput, RatioSummary, SrmInput, analyze
from stats.analysis import MetricType, Role

ARMS = ("control", "b", "c", "d")
KINDS: tuple[MetricType, ...] = ("binomial", "mean", "mean", "ratio")
N_METRICS = 20
REPEATS = 200


def build_metrics(seed: int = 7) -> list[MetricInput]:
    rng = np.random.default_rng(seed)
    metrics: list[MetricInput] = []
    for k in range(N_METRICS):
        role: Role = "primary" if k == 0 else ("guardrail" if k >= 16 else "secondary")
        kind: MetricType = KINDS[k % 4]
        variants: dict[str, MeanSummary | RatioSummary] = {}
        for arm in ARMS:
            n = 2000
            if kind == "ratio":
                den = rng.poisson(3.0, n) + 1.0
                num = den * rng.gamma(2.0, 3.0, n)
                variants[arm] = RatioSummary.from_arrays(num, den)
            elif kind == "binomial":
                pre = (rng.random(n) < 0.1).astype(float)
                x = np.where(rng.random(n) < 0.5, pre, (rng.random(n) < 0.1).astype(float))
                variants[arm] = MeanSummary.from_array(x, pre)
            else:
                pre = rng.gamma(2.0, 10.0, n)
                x = 0.7 * pre + rng.gamma(2.0, 5.0, n)
                variants[arm] = MeanSummary.from_array(x, pre)
        metrics.append(
            MetricInput(
                key=f"m{k}",
                type=kind,
                variants=variants,
                role=role,
                guardrail_margin=0.05 if role == "guardrail" else None,
            )
        )
    return metrics


def main() -> None:
    metrics = build_metrics()
    settings = AnalysisSettings(
        alpha=0.05, correction="holm", cuped=True, sequential=True, bayesian=True
    )
    srm = SrmInput(units=dict.fromkeys(ARMS, 2000), weights=dict.fromkeys(ARMS, 0.25))

    def engine() -> None:
        analyze(metrics, control="control", settings=settings, srm=srm)

    moments = []
    for m in metrics:
        c = m.variants["control"]
        for arm in ARMS[1:]:
            t = m.variants[arm]
            if isinstance(c, MeanSummary) and isinstance(t, MeanSummary):
                moments.append((c.mean, c.variance**0.5, c.n, t.mean, t.variance**0.5, t.n))
            else:
                moments.append((c.mean, 1.0, c.n, t.mean, 1.0, t.n))

    def baseline() -> None:
        for mc, sc, nc, mt, st, nt in moments:
            sps.ttest_ind_from_stats(mt, st, nt, mc, sc, nc, equal_var=False)

    def median_ms(fn: object) -> float:
        assert callable(fn)
        for _ in range(10):
            fn()
        times = []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e3

    engine_ms = median_ms(engine)
    base_ms = median_ms(baseline)
    comparisons = N_METRICS * (len(ARMS) - 1)
    print(f"stats.analyze: {len(ARMS)} arms x {N_METRICS} metrics = {comparisons} comparisons")
    print("  (CUPED, sequential, Bayesian, guardrails, Holm, SRM all on)")
    print(f"engine median:   {engine_ms:8.3f} ms over {REPEATS} runs (target < 20 ms)")
    print(f"baseline median: {base_ms:8.3f} ms (scipy ttest_ind_from_stats x {comparisons})")
    print(f"ratio engine/baseline: {engine_ms / base_ms:.2f}")


if __name__ == "__main__":
    main()
