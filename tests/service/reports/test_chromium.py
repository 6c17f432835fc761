"""The demo against a live server, and its report in a real headless Chromium.

A uvicorn subprocess serves a fresh SQLite database with a bootstrap admin key; ``run_demo``
creates and fills an experiment over HTTP; ``trialbook report`` saves the HTML and Markdown; then
Chromium takes a screenshot and dumps the DOM of a copy of the page with a probe script appended
(the probe is test-only: the served page has no script) that records the rendered size of every
chart and every resource the page loaded (``performance.getEntriesByType('resource')``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.live import LiveServer, migrate

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ADMIN_KEY = "tb_reports_e2e_admin_0123456789"

PROBE = """<script>
document.addEventListener('DOMContentLoaded', function () {
  var loaded = performance.getEntriesByType('resource').map(function (e) { return e.name; });
  var out = {charts: [], resources: loaded,
             scorecard: !!document.querySelector('#scorecard table.scorecard')};
  document.querySelectorAll('svg.ci-chart').forEach(function (s) {
    var r = s.getBoundingClientRect(); out.charts.push([r.width, r.height]);
  });
  var pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("live")
    url = f"sqlite:///{tmp / 'live.db'}"
    migrate(url)
    with LiveServer(database_url=url, log=tmp / "server.log", bootstrap_admin_key=ADMIN_KEY) as srv:
        yield srv.url


@pytest.fixture(scope="module")
def demo(live_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from service.demo import run_demo
    from service.reports import cli

    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=live_server, headers=headers, timeout=60) as client:
        summary = run_demo(client, base_url=live_server, units=6000, seed=11, suffix="e2e")
    out = tmp_path_factory.mktemp("report")
    html_path, md_path = out / "report.html", out / "report.md"
    for fmt, path in (("html", html_path), ("md", md_path)):
        args = argparse.Namespace(
            experiment=summary.experiment, out=str(path), format=fmt, url=live_server, key=ADMIN_KEY
        )
        assert cli.run(args) == 0
    return {"summary": summary, "html": html_path, "md": md_path, "dir": out}


def test_demo_creates_a_harmed_guardrail_and_a_true_effect(demo: dict[str, Any]) -> None:
    # 3,000 users per arm: the +50% error rate is ~4 standard errors past the 5% margin and the
    # +20% purchase lift ~2.7 from zero, whatever the server's random hashing seed
    results = demo["summary"].results
    assert demo["summary"].users == 6000
    by_role = {m["role"]: m for m in results["metrics"]}
    assert by_role["primary"]["comparisons"][0]["relative"]["estimate"] > 0
    assert by_role["guardrail"]["comparisons"][0]["guardrail"]["status"] == "fail"
    assert results["decision"]["recommendation"] == "roll_back"


def test_saved_markdown_has_the_json_numbers(demo: dict[str, Any], tools: Any) -> None:
    md = demo["md"].read_text()
    for metric in demo["summary"].results["metrics"]:
        for c in metric["comparisons"]:
            row = tools.md_row(
                md,
                f"({metric['metric'].replace('_', chr(92) + '_')})",
                f"{c['variant']} vs {c['control']}",
            )
            tools.assert_shown(row[1], c["absolute"]["estimate"])
            tools.assert_shown(row[3], c["relative"]["estimate"])
            tools.assert_shown(row[6], c["p_value_adjusted"])


def _chromium(*args: str, user_dir: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={user_dir}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`)"
)
def test_report_renders_in_headless_chromium(demo: dict[str, Any]) -> None:
    html = demo["html"].read_text()
    assert "<script" not in html  # the served page is script-free
    assert not re.search(r"\bsrc\s*=|url\(|@import|<link|href\s*=\s*[\"']?(https?:)?//", html)
    out: Path = demo["dir"]
    png = out / "report.png"
    r = _chromium(
        f"--screenshot={png}",
        "--window-size=1280,3000",
        demo["html"].as_uri(),
        user_dir=out / "profile-shot",
    )
    assert png.exists(), r.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000

    probed = out / "probed.html"
    probed.write_text(html.replace("</body>", PROBE + "</body>"))
    r = _chromium(
        "--dump-dom",
        "--virtual-time-budget=5000",
        "--window-size=1280,3000",
        probed.as_uri(),
        user_dir=out / "profile-dom",
    )
    match = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout, re.S)
    assert match, r.stderr[-2000:]
    probe = json.loads(match.group(1).replace("&quot;", '"'))
    assert probe["scorecard"] is True
    assert len(probe["charts"]) == 3
    assert all(w > 100 and h > 50 for w, h in probe["charts"]), probe["charts"]
    assert probe["resources"] == [], probe["resources"]  # nothing loaded, from outside or not
    if os.environ.get("TRIALBOOK_SAVE_REPORT_PNG"):
        shutil.copy(png, os.environ["TRIALBOOK_SAVE_REPORT_PNG"])
