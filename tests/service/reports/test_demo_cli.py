"""``trialbook demo`` and ``trialbook report`` as a newcomer runs them beside ``trialbook serve``.

No flags: the commands mint a one-run key in the server's database (and revoke it after); the
demo keeps working under a strict organisation default template; the report line the demo
prints runs as printed.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.support.live import LiveServer, migrate

DATABASE_URL = os.environ["TRIALBOOK_DATABASE_URL"]  # the suite's database (tests/conftest.py)
PROGRAM = str(Path(sys.executable).with_name("trialbook"))  # .venv/bin/trialbook
ADMIN = "tb_admin_key_for_the_demo_cli_tests_0123456789"


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRIALBOOK_")}
    return subprocess.run(
        [PROGRAM, *args],
        cwd=cwd,
        env={**base, "TRIALBOOK_DATABASE_URL": DATABASE_URL, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def server(engine: Any, tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(database_url=DATABASE_URL, log=tmp_path / "server.log", cli=True) as srv:
        yield srv


def make_admin(engine: Any) -> dict[str, str]:
    from service.db import open_session
    from service.keys.models import Role
    from service.keys.service import create_key

    with open_session(write=True) as session:
        return {"Authorization": f"Bearer {create_key(session, name='t', role=Role.admin).key}"}


def test_demo_with_no_flags_runs_and_its_report_line_works_as_printed(server, engine, tmp_path):
    done = run_cli("demo", "--url", server.url, "--units", "2000", cwd=tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "recommendation:" in done.stdout
    line = next(ln.strip() for ln in done.stdout.splitlines() if " report demo-checkout-" in ln)
    assert line.startswith(f"{PROGRAM} report demo-checkout-") and line.endswith(
        "--out report.html"
    )
    saved = subprocess.run(
        line,
        shell=True,
        cwd=tmp_path,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("TRIALBOOK_")},
            "TRIALBOOK_DATABASE_URL": DATABASE_URL,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # The printed line names --url (the test server is not on the default port).
    assert saved.returncode == 0, saved.stderr
    assert "<html" in (tmp_path / "report.html").read_text()[:500].lower()
    # The one-run keys of both commands are revoked: no working secret is left behind.
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT name, role, revoked_at FROM api_key")).all()
    local = [(r[0], r[1]) for r in rows if "local" in r[0]]
    assert sorted(local) == [
        ("trialbook demo (local, revoked after the run)", "admin"),
        ("trialbook report (local, revoked after the run)", "viewer"),
    ]
    assert all(r[2] is not None for r in rows if "local" in r[0])


def test_demo_registers_under_its_own_template_when_a_strict_default_exists(
    server, engine, tmp_path
):
    admin = make_admin(engine)
    strict = {
        "key": "standard",
        "name": "Standard protocol",
        "is_default": True,
        "rules": {
            "minimum_duration_days": 14,
            "approval_required": True,
            "required_guardrails": [{"metric": "demo_checkout_error", "max_margin": 0.01}],
            "allowed_primary_metrics": ["conversion"],
        },
    }
    # a template's rules may name only metrics of the catalogue (product.md §11)
    for key in ("demo_checkout_error", "conversion"):
        metric = {"key": key, "name": key, "type": "binomial", "event": key}
        r = httpx.post(server.url + "/v1/metrics", json=metric, headers=admin)
        assert r.status_code == 201, r.text
    r = httpx.post(server.url + "/v1/templates", json=strict, headers=admin)
    assert r.status_code == 201, r.text
    done = run_cli("demo", "--url", server.url, "--units", "1000", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    key = re.search(r"experiment (demo-checkout-\S+):", done.stdout)
    assert key is not None, done.stdout
    exp = httpx.get(f"{server.url}/v1/experiments/{key.group(1)}", headers=admin).json()
    assert (exp["template"], exp["status"]) == ("trialbook-demo", "running")
    # Rules added to the demo template later are replaced by a rule-free version on the next run.
    body = {"name": "Demo", "rules": {"minimum_duration_days": 30}}
    assert httpx.put(
        server.url + "/v1/templates/trialbook-demo", json=body, headers=admin
    ).is_success
    again = run_cli("demo", "--url", server.url, "--units", "1000", cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_report_honours_the_bootstrap_key_like_the_demo(engine, tmp_path):
    with LiveServer(
        database_url=DATABASE_URL, log=tmp_path / "s.log", bootstrap_admin_key=ADMIN
    ) as srv:
        other = tmp_path / "elsewhere.db"  # no local database to mint a key in
        env = {
            "TRIALBOOK_BOOTSTRAP_ADMIN_KEY": ADMIN,
            "TRIALBOOK_DATABASE_URL": f"sqlite:///{other}",
        }
        demo = run_cli("demo", "--url", srv.url, "--units", "500", cwd=tmp_path, env=env)
        assert demo.returncode == 0, demo.stderr
        key = re.search(r"experiment (demo-checkout-\S+):", demo.stdout)
        assert key is not None
        report = run_cli(
            "report", key.group(1), "--url", srv.url, "--format", "md", cwd=tmp_path, env=env
        )
        assert report.returncode == 0, report.stderr
        assert key.group(1) in report.stdout
    assert not other.exists()


def test_commands_without_a_key_or_a_database_say_how_to_give_one(tmp_path):
    env = {"TRIALBOOK_DATABASE_URL": f"sqlite:///{tmp_path / 'none.db'}"}
    for args in (["demo"], ["report", "x"]):
        done = run_cli(*args, "--url", "http://127.0.0.1:9", cwd=tmp_path, env=env)
        assert done.returncode == 2, done.stderr
        assert "--key or TRIALBOOK_API_KEY" in done.stderr and "none.db" in done.stderr


def test_a_key_minted_in_another_database_gets_a_message_naming_the_cause(server, tmp_path):
    other = f"sqlite:///{tmp_path / 'other.db'}"
    migrate(other)
    done = run_cli("demo", "--url", server.url, cwd=tmp_path, env={"TRIALBOOK_DATABASE_URL": other})
    assert done.returncode == 1
    assert "serves another database" in done.stderr and "other.db" in done.stderr
    printed = shlex.split(done.stderr)  # no traceback
    assert "Traceback" not in printed


def test_the_warehouse_demo_writes_a_duckdb_file_and_analyses_it_there(server, engine, tmp_path):
    """``trialbook demo --warehouse duckdb`` (``make demo WAREHOUSE=duckdb``): the events go to a
    DuckDB file, registered as the experiment's data source, and the results come from it."""
    path = tmp_path / "demo.duckdb"
    done = run_cli(
        "demo", "--url", server.url, "--units", "2000", "--warehouse", "duckdb",
        "--warehouse-path", str(path), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert str(path) in done.stderr
    assert path.exists()
    key = re.search(r"report (demo-checkout-\S+)", done.stdout).group(1)
    admin = make_admin(engine)
    exp = httpx.get(f"{server.url}/v1/experiments/{key}", headers=admin).json()
    assert exp["data_source"] == "demo-duckdb"
    results = httpx.get(f"{server.url}/v1/experiments/{key}/results", headers=admin, timeout=60)
    assert results.status_code == 200 and results.json()["units"] > 1500
    with engine.connect() as conn:  # nothing went to the built-in store
        assert conn.execute(text("SELECT COUNT(*) FROM exposure")).scalar_one() == 0
