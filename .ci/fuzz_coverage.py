"""Per-operation coverage of the schemathesis runs, read from their HAR reports.

Usage: fuzz_coverage.py [--unreached] OPENAPI_JSON HAR [HAR ...]

Prints, for every operation of the OpenAPI file, how many requests reached it and how they were
answered (2xx, 404, other 4xx, 5xx) over all the runs given (one HAR per role). An operation is
*reached* when at least one request was answered by its handler with a 2xx. Exits 1 if an operation
was never reached or any request got a 5xx. With `--unreached`, prints only the paths of the
operations not reached yet (one `METHOD PATH` a line), for a second, targeted run.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit


def _operations(spec: dict) -> list[tuple[str, str, re.Pattern[str]]]:
    ops = []
    for path, methods in spec["paths"].items():
        pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")
        for method in methods:
            ops.append((method.upper(), path, pattern))
    # literal paths before templated ones (/v1/alerts/check before /v1/alerts/{alert_id}/…)
    ops.sort(key=lambda op: op[1].count("{"))
    return ops


def main(spec_path: str, hars: list[str], unreached_only: bool = False) -> int:
    ops = _operations(json.loads(Path(spec_path).read_text()))
    counts: dict[tuple[str, str], Counter[str]] = {(m, p): Counter() for m, p, _ in ops}
    for har in hars:
        for entry in json.loads(Path(har).read_text())["log"]["entries"]:
            method = entry["request"]["method"].upper()
            path = urlsplit(entry["request"]["url"]).path
            status = int(entry["response"]["status"])
            for m, p, pattern in ops:
                if m == method and pattern.match(path):
                    bucket = (
                        "5xx"
                        if status >= 500
                        else "404"
                        if status == 404
                        else "4xx"
                        if status >= 400
                        else "2xx"
                    )
                    counts[(m, p)][bucket] += 1
                    counts[(m, p)]["all"] += 1
                    break
    if unreached_only:
        for m, p, _ in ops:
            if counts[(m, p)]["2xx"] == 0:
                print(f"{m} {p}")
        return 0
    width = max(len(f"{m} {p}") for m, p, _ in ops)
    print(f"{'operation':<{width}}  {'requests':>8} {'2xx':>6} {'404':>6} {'4xx':>6} {'5xx':>4}")
    unreached, errors = [], 0
    for m, p, _ in ops:
        c = counts[(m, p)]
        name = f"{m} {p}"
        row = f"{c['all']:>8} {c['2xx']:>6} {c['404']:>6} {c['4xx']:>6} {c['5xx']:>4}"
        print(f"{name:<{width}}  {row}")
        if c["2xx"] == 0:
            unreached.append(f"{m} {p}")
        errors += c["5xx"]
    reached = len(ops) - len(unreached)
    print(f"\n{reached} of {len(ops)} operations reached with a 2xx; {errors} responses were 5xx")
    for op in unreached:
        print(f"never reached: {op}")
    return 1 if unreached or errors else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    only = args[:1] == ["--unreached"]
    sys.exit(main(args[only], args[only + 1 :], unreached_only=only))
