"""Regenerate the report screenshots in ``docs/`` from a fresh server with sample data.

    .venv/bin/python docs/screenshots.py            # writes docs/report.png, index.png, print.png

A LiveServer on a scratch SQLite database gets three experiments through the HTTP API: the demo
checkout (a true +20% on purchases, a harmed guardrail, sliced by platform, started ten days
ago so the lift-over-time chart has ten days), an experiment with a sample ratio mismatch that
shares units with it (so the report lists an overlap checked), and a concluded one. The start
is moved back in the database (the API has no way to start in the past); every event goes
through ``POST /v1/events``. Then headless Chromium (:mod:`service.reports.browser`) signs in at
``/login`` and takes the screenshots: the top of the report at 1280×900, the index, and the first
printed A4 page. The browser tests import :func:`sample_data` from here.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service import demo  # noqa: E402
from service.reports.browser import Chromium, Page  # noqa: E402
from tests.support.live import LiveServer, migrate  # noqa: E402

ADMIN_KEY = "tb_screenshots_admin_0123456789abcdef"
MAIN = "demo-checkout"
SRM = "banner-colour"
DONE = "search-ranking"
DAYS = 10


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def backdate(db_path: Path, key: str, days: float) -> datetime:
    """Move an experiment's start (and its phase's) ``days`` back; returns the new start."""
    start = datetime.now(UTC) - timedelta(days=days)
    naive = start.replace(tzinfo=None).isoformat(sep=" ")
    with sqlite3.connect(db_path) as db:
        (exp_id,) = db.execute("SELECT id FROM experiment WHERE key = ?", (key,)).fetchone()
        db.execute("UPDATE experiment SET started_at = ? WHERE id = ?", (naive, exp_id))
        db.execute(
            "UPDATE experiment_phase SET started_at = ? WHERE experiment_id = ? AND phase = 1",
            (naive, exp_id),
        )
    return start


def _ok(r: httpx.Response, what: str) -> Any:
    if r.status_code >= 300:
        raise RuntimeError(f"{what}: HTTP {r.status_code} {r.text[:300]}")
    return r.json() if r.content else None


def _post_events(client: httpx.Client, events: list[dict[str, Any]]) -> None:
    for i in range(0, len(events), 5000):
        body = _ok(client.post("/v1/events", json={"events": events[i : i + 5000]}), "events")
        assert not body["rejected"], body["rejected"][:3]


def sample_data(client: httpx.Client, db_path: Path, *, users: int = 4000, seed: int = 5) -> None:
    """The three sample experiments (see the module docstring), through the HTTP API."""
    demo.ensure_metrics(client)
    rng = np.random.default_rng(seed)
    main = demo.experiment_body(MAIN, users)
    main |= {"dimensions": ["platform"], "tags": ["checkout", "q4"], "expected_daily_units": 600.0}
    _ok(client.post("/v1/experiments", json=main), "create main")
    _ok(client.post(f"/v1/experiments/{MAIN}/start"), "start main")
    start = backdate(db_path, MAIN, DAYS)
    srm = demo.experiment_body(SRM, users) | {
        "title": "Banner colour",
        "owner": "growth@trialbook.dev",
        "tags": ["homepage"],
        "description": "Exposure logging drops half of the treatment's units: an SRM.",
        "hypothesis": "A warmer banner colour lifts purchases.",
    }
    _ok(client.post("/v1/experiments", json=srm), "create srm")
    _ok(client.post(f"/v1/experiments/{SRM}/start"), "start srm")
    backdate(db_path, SRM, DAYS)
    done = demo.experiment_body(DONE, users) | {
        "title": "Search ranking v2",
        "owner": "search@trialbook.dev",
        "tags": ["search"],
        "hypothesis": "Learning-to-rank lifts purchases from search.",
    }
    _ok(client.post("/v1/experiments", json=done), "create done")
    _ok(client.post(f"/v1/experiments/{DONE}/start"), "start done")
    platforms = ["web", "ios", "android"]
    events: list[dict[str, Any]] = []
    truth = {"control": (0.10, 0.05), "treatment": (0.12, 0.075)}
    for i in range(users):
        unit = f"user-{i}"
        at = start + timedelta(seconds=float(rng.uniform(60, DAYS * 86_400 - 3_600)))
        if at > datetime.now(UTC) - timedelta(minutes=5):
            at = datetime.now(UTC) - timedelta(minutes=5)
        variant = "treatment" if rng.random() < 0.5 else "control"
        platform = platforms[int(rng.integers(0, 3))]
        events.append(
            {
                "event_id": str(uuid.uuid4()),
                "type": "exposure",
                "experiment": MAIN,
                "variant": variant,
                "unit_id": unit,
                "timestamp": _iso(at),
                "attributes": {"platform": platform},
            }
        )
        p_buy, p_err = truth[variant]
        later = _iso(at + timedelta(minutes=2))
        if rng.random() < p_buy * (1.3 if platform == "ios" else 1.0):
            events.append(_conv("demo_purchase", unit, later))
            events.append(
                _conv("demo_revenue", unit, later, round(float(rng.lognormal(3.5, 0.6)), 2))
            )
        if rng.random() < p_err:
            events.append(_conv("demo_checkout_error", unit, later))
        # the SRM experiment: every unit, but only half of the treatment's exposures are logged
        other = "treatment" if rng.random() < 0.5 else "control"
        if other == "control" or rng.random() < 0.5:
            events.append(
                {
                    "event_id": str(uuid.uuid4()),
                    "type": "exposure",
                    "experiment": SRM,
                    "variant": other,
                    "unit_id": unit,
                    "timestamp": _iso(at + timedelta(seconds=30)),
                }
            )
    now = datetime.now(UTC) - timedelta(minutes=1)
    for i in range(1500):
        unit = f"searcher-{i}"
        variant = "treatment" if i % 2 else "control"
        events.append(
            {
                "event_id": str(uuid.uuid4()),
                "type": "exposure",
                "experiment": DONE,
                "variant": variant,
                "unit_id": unit,
                "timestamp": _iso(now - timedelta(minutes=3)),
            }
        )
        if rng.random() < (0.10 if variant == "control" else 0.13):
            events.append(_conv("demo_purchase", unit, _iso(now)))
    _post_events(client, events)
    _ok(client.post(f"/v1/experiments/{DONE}/stop"), "stop done")
    _ok(
        client.post(
            f"/v1/experiments/{DONE}/conclude",
            json={
                "decision": "inconclusive",
                "rationale": "Stopped early for a reindex; rerun after the migration.",
            },
        ),
        "conclude done",
    )
    for key in (MAIN, SRM):
        _ok(client.get(f"/v1/experiments/{key}/results"), f"results {key}")


def _conv(name: str, unit: str, at: str, value: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "type": "conversion",
        "name": name,
        "unit_id": unit,
        "timestamp": at,
    }
    if value is not None:
        out["value"] = value
    return out


@contextmanager
def sample_server(tmp: Path) -> Iterator[tuple[str, Path]]:
    """A LiveServer on a fresh SQLite database under ``tmp``, filled by :func:`sample_data`."""
    db_path = tmp / "sample.db"
    url = f"sqlite:///{db_path}"
    migrate(url)
    with LiveServer(database_url=url, log=tmp / "server.log", bootstrap_admin_key=ADMIN_KEY) as srv:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        with httpx.Client(base_url=srv.url, headers=headers, timeout=120) as client:
            sample_data(client, db_path)
        yield srv.url, db_path


def login(page: Page, base_url: str, key: str) -> None:
    """Sign in through the form at /login, as a person would."""
    page.goto(f"{base_url}/login")
    page.submit(
        f"document.getElementById('api_key').value = {key!r};"
        "document.getElementById('login').submit()"
    )


def shoot(base_url: str, out: Path) -> list[Path]:
    """Sign in and take the three screenshots into ``out``."""
    with Chromium() as browser:
        page = browser.new_page(1280, 900)
        login(page, base_url, ADMIN_KEY)
        page.goto(f"{base_url}/v1/experiments/{MAIN}/report")
        report = out / "report.png"
        page.screenshot(report)
        page.goto(f"{base_url}/")
        index = out / "index.png"
        page.screenshot(index)
        # the first printed A4 page: 210 mm wide minus the 12 mm margins, at 96 px per inch
        page.goto(f"{base_url}/v1/experiments/{MAIN}/report")
        page.media("print")
        page.viewport(703, 1033)
        printed = out / "print.png"
        page.screenshot(printed)
    return [report, index, printed]


def main() -> int:
    with (
        tempfile.TemporaryDirectory(prefix="tb-shots-") as tmp,
        sample_server(Path(tmp)) as (
            url,
            _,
        ),
    ):
        for path in shoot(url, ROOT / "docs"):
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
