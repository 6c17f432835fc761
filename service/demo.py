"""``trialbook demo``: the whole product in a minute, against a running server.

Creates three catalogue metrics (a binomial primary, a mean secondary, a lower-is-better guardrail),
registers and starts an experiment, simulates users — variants assigned locally with the
``trialbook`` SDK's hashing from ``GET /v1/sdk/config`` (the same function the server uses), or
through ``POST /v1/assign`` when the config is unavailable — and sends their exposures and
conversions through ``POST /v1/events`` in batches, with a text progress bar. The simulated truth:
the treatment lifts purchases from 10% to 12% (+20%) and revenue with it, but raises checkout
errors from 5% to 7.5% (+50%, far past the 5% guardrail margin), so the recommendation is
``roll_back``. Pre-period revenue events feed CUPED.

Every run uses a new experiment key (a time-and-random suffix); the metrics and the demo template
are created once and reused, so running it twice is fine. The experiment registers under a template
of its own (``trialbook-demo``, no rules), so an organisation default template with stricter rules
(a minimum duration, required guardrails, approval) does not stop the demo.

With no key given (``--key``, ``TRIALBOOK_API_KEY``, ``TRIALBOOK_BOOTSTRAP_ADMIN_KEY``), the command
mints an admin key straight into the configured database, as ``trialbook keys create`` does, and
revokes it when it ends: on the server machine ``make demo`` needs no flags.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import numpy as np
import typer

if TYPE_CHECKING:  # httpx is imported when the command runs: the server does not need it
    import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
USERS_PER_BATCH = 1000

METRICS: list[dict[str, Any]] = [
    {
        "key": "demo_purchase",
        "name": "Purchase (demo)",
        "description": "Did the user buy at least once?",
        "type": "binomial",
        "event": "demo_purchase",
    },
    {
        "key": "demo_revenue",
        "name": "Revenue per user (demo)",
        "description": "Sum of order values per user",
        "type": "mean",
        "event": "demo_revenue",
        "winsorize_upper": 0.99,
    },
    {
        "key": "demo_checkout_error",
        "name": "Checkout error (demo)",
        "description": "Did the user hit a checkout error?",
        "type": "binomial",
        "event": "demo_checkout_error",
        "higher_is_better": False,
    },
]

# The demo's own template: no rules, so that any organisation default leaves the demo alone.
DEMO_TEMPLATE: dict[str, Any] = {
    "key": "trialbook-demo",
    "name": "Demo (trialbook demo)",
    "description": "Created by `trialbook demo` for its simulated experiments: no rules.",
}

# The simulated truth, per variant: purchase rate, error rate. Revenue = purchase × lognormal.
TRUTH = {"control": (0.10, 0.050), "treatment": (0.12, 0.075)}


class DemoError(Exception):
    """The server refused a step of the demo (the message says which and why)."""


@dataclass(frozen=True)
class DemoSummary:
    """What the demo created and what the server concluded."""

    experiment: str
    report_url: str
    users: int
    events: int
    results: dict[str, Any]


def _check(r: httpx.Response, what: str, ok: tuple[int, ...] = (200, 201)) -> dict[str, Any]:
    if r.status_code not in ok:
        raise DemoError(f"{what} failed: HTTP {r.status_code} {r.text[:500]}")
    body: dict[str, Any] = r.json() if r.content else {}
    return body


def ensure_metrics(client: httpx.Client) -> None:
    """Create the demo metrics, or reuse them when a previous run created them."""
    for body in METRICS:
        r = client.get(f"/v1/metrics/{body['key']}")
        if r.status_code == 200:
            continue
        _check(client.post("/v1/metrics", json=body), f"creating metric {body['key']}")


def ensure_demo_template(client: httpx.Client) -> str:
    """Create the demo template, or reuse it; a version with rules gets a new rule-free version."""
    key = str(DEMO_TEMPLATE["key"])
    r = client.get(f"/v1/templates/{key}")
    if r.status_code == 404:
        _check(client.post("/v1/templates", json=DEMO_TEMPLATE), "creating the demo template")
        return key
    tpl = _check(r, "reading the demo template")
    if any(tpl.get("rules", {}).values()):  # someone added rules: the demo needs none
        body = {k: v for k, v in DEMO_TEMPLATE.items() if k != "key"}
        _check(client.put(f"/v1/templates/{key}", json=body), "updating the demo template")
    return key


def experiment_body(key: str, units: int, template: str | None = None) -> dict[str, Any]:
    """The demo protocol: purchase is primary with a 15% MDE, error rate is guarded at 5%."""
    body: dict[str, Any] = {
        "key": key,
        "title": "One-page checkout (demo)",
        "owner": "demo@trialbook.dev",
        "description": "Simulated by `trialbook demo`: a true +20% on purchases and a harmed "
        "guardrail (+50% checkout errors).",
        "hypothesis": {
            "change": "Replace the three-step checkout with a single page",
            "population": "All visitors who reach the cart",
            "expected_outcome": "Purchase rate rises by at least 15% (relative)",
            "rationale": "Session recordings show drop-off at every step change",
        },
        "variants": [
            {"key": "control", "name": "Three steps", "weight": 0.5, "is_control": True},
            {"key": "treatment", "name": "One page", "weight": 0.5},
        ],
        "primary_metric": {"metric": "demo_purchase", "mde": 0.15},
        "secondary_metrics": ["demo_revenue"],
        "guardrails": [{"metric": "demo_checkout_error", "margin": 0.05}],
        "baseline": {"rate": 0.1},
        "expected_daily_units": float(max(units, 1)),
        "analysis": {"bayesian": True, "pre_period_days": 14},
    }
    if template is not None:
        body["template"] = template
    return body


def _assigner(client: httpx.Client, key: str) -> Callable[[str], str | None]:
    """Local assignment from the SDK config when available, else the server's ``/v1/assign``."""
    r = client.get("/v1/sdk/config")
    if r.status_code == 200:
        from trialbook.assignment import compile_config

        compiled = compile_config(r.json())

        def local(unit: str) -> str | None:
            a = compiled.evaluate(key, unit)
            return a.variant if a.in_experiment else None

        return local

    def remote(unit: str) -> str | None:
        body = _check(
            client.post("/v1/assign", json={"unit_id": unit, "experiments": [key]}),
            "assigning a unit",
        )
        item = body["assignments"][0]
        return str(item["variant"]) if item["in_experiment"] else None

    return remote


def _progress(out: TextIO, done: int, total: int, events: int) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    out.write(
        f"\r  [{'#' * filled}{'.' * (width - filled)}] {done / max(total, 1):4.0%} "
        f"{done:,}/{total:,} users · {events:,} events"
    )
    out.flush()


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def simulate(
    client: httpx.Client,
    key: str,
    *,
    units: int,
    seed: int,
    prefix: str,
    progress: TextIO | None = None,
    sink: Callable[[list[dict[str, Any]]], int] | None = None,
) -> tuple[int, int]:
    """Simulate ``units`` users of experiment ``key`` and send their events (to ``sink`` when
    given: it keeps them and returns how many it took; the warehouse demo writes them to DuckDB).

    Returns
    -------
    tuple of int
        (users in the experiment, events accepted).
    """
    rng = np.random.default_rng(seed)
    assign = _assigner(client, key)
    in_experiment = 0
    accepted = 0
    for start in range(0, units, USERS_PER_BATCH):
        now = datetime.now(UTC)
        exposed_at = _iso(now - timedelta(seconds=2))
        converted_at = _iso(now - timedelta(seconds=1))
        pre_at = _iso(now - timedelta(days=3))
        events: list[dict[str, Any]] = []
        for i in range(start, min(start + USERS_PER_BATCH, units)):
            unit = f"{prefix}-{i}"
            variant = assign(unit)
            if variant is None:
                continue
            in_experiment += 1
            p_buy, p_err = TRUTH.get(variant, TRUTH["control"])
            # a spending propensity shared by the pre-period and the experiment (CUPED's covariate)
            propensity = float(rng.lognormal(3.5, 0.6))
            events.append(
                {
                    "event_id": str(uuid.uuid4()),
                    "type": "exposure",
                    "experiment": key,
                    "variant": variant,
                    "unit_id": unit,
                    "timestamp": exposed_at,
                }
            )
            if rng.random() < 0.3:
                events.append(
                    {
                        "event_id": str(uuid.uuid4()),
                        "type": "conversion",
                        "name": "demo_revenue",
                        "unit_id": unit,
                        "value": round(propensity * float(rng.uniform(0.8, 1.2)), 2),
                        "timestamp": pre_at,
                    }
                )
            if rng.random() < p_buy:
                value = round(propensity * float(rng.uniform(0.8, 1.2)), 2)
                events.append(
                    {
                        "event_id": str(uuid.uuid4()),
                        "type": "conversion",
                        "name": "demo_purchase",
                        "unit_id": unit,
                        "timestamp": converted_at,
                    }
                )
                events.append(
                    {
                        "event_id": str(uuid.uuid4()),
                        "type": "conversion",
                        "name": "demo_revenue",
                        "unit_id": unit,
                        "value": value,
                        "timestamp": converted_at,
                    }
                )
            if rng.random() < p_err:
                events.append(
                    {
                        "event_id": str(uuid.uuid4()),
                        "type": "conversion",
                        "name": "demo_checkout_error",
                        "unit_id": unit,
                        "timestamp": converted_at,
                    }
                )
        if events and sink is not None:
            accepted += sink(events)
        elif events:
            body = _check(client.post("/v1/events", json={"events": events}), "sending events")
            if body.get("rejected"):
                raise DemoError(f"the server rejected events: {body['rejected'][:3]}")
            accepted += int(body.get("accepted", 0))
        if progress is not None:
            _progress(progress, min(start + USERS_PER_BATCH, units), units, accepted)
    if progress is not None:
        progress.write("\n")
    return in_experiment, accepted


def run_demo(
    client: httpx.Client,
    *,
    base_url: str,
    units: int = 20_000,
    seed: int = 7,
    suffix: str | None = None,
    progress: TextIO | None = None,
    warehouse: Path | None = None,
) -> DemoSummary:
    """Create, start and fill a demo experiment, then fetch its results.

    Parameters
    ----------
    client : httpx.Client
        A client for the server, with ``base_url`` and an admin ``Authorization`` header.
    base_url : str
        The server's public URL (for the report link printed).
    units : int, default 20000
        Users to simulate.
    seed : int, default 7
        Seed of the simulation (the experiment's hashing seed is the server's).
    suffix : str, optional
        Experiment key suffix; default: the time and a random part (a new key every run).
    progress : text stream, optional
        Where to draw the progress bar.
    warehouse : pathlib.Path, optional
        A DuckDB file to write the events to (instead of ``/v1/events``), registered as the
        experiment's data source (``service.warehouse.demo``).

    Returns
    -------
    DemoSummary

    Raises
    ------
    DemoError
        When the server refuses a step.
    """
    suffix = suffix or f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    key = f"demo-checkout-{suffix}"
    ensure_metrics(client)
    template = ensure_demo_template(client)
    body = experiment_body(key, units, template)
    kept: list[dict[str, Any]] = []
    if warehouse is not None:
        from service.warehouse.demo import DEMO_SOURCE

        body["data_source"] = DEMO_SOURCE
        if client.get(f"/v1/data-sources/{DEMO_SOURCE}").status_code == 200:
            _check(
                client.delete(f"/v1/data-sources/{DEMO_SOURCE}"),
                "replacing the demo source",
                (204, 409),
            )
    if warehouse is not None and client.get(f"/v1/data-sources/{DEMO_SOURCE}").status_code == 404:
        from service.warehouse.demo import source_body

        _check(
            client.post("/v1/data-sources", json=source_body(warehouse)),
            "registering the DuckDB source",
        )
    _check(client.post("/v1/experiments", json=body), "creating the experiment")
    _check(client.post(f"/v1/experiments/{key}/start"), "starting the experiment")

    def keep(events: list[dict[str, Any]]) -> int:
        kept.extend(events)
        return len(events)

    users, events = simulate(
        client,
        key,
        units=units,
        seed=seed,
        prefix=f"u-{suffix}",
        progress=progress,
        sink=keep if warehouse is not None else None,
    )
    if warehouse is not None:
        from service.warehouse.demo import write_duckdb

        # every run rewrites the file (earlier experiments' rows go with it)
        write_duckdb(warehouse, kept)
    results = _check(client.get(f"/v1/experiments/{key}/results"), "fetching the results")
    return DemoSummary(
        experiment=key,
        report_url=f"{base_url.rstrip('/')}/v1/experiments/{key}/report",
        users=users,
        events=events,
        results=results,
    )


def summary_text(summary: DemoSummary, report_command: str | None = None) -> str:
    """A few lines for the terminal: the recommendation, its reasons, where to read the report.

    ``report_command`` is the command that saves the report (default: ``trialbook report KEY``).
    """
    r = summary.results
    decision = r.get("decision") or {}
    lines = [
        f"experiment {summary.experiment}: {summary.users:,} users, {summary.events:,} events",
    ]
    for m in r.get("metrics") or []:
        for c in m.get("comparisons") or []:
            rel = c.get("relative") or {}
            est, lo, hi = rel.get("estimate"), rel.get("ci_low"), rel.get("ci_high")
            if None in (est, lo, hi):
                continue
            verdict = (c.get("guardrail") or {}).get("status") or (
                "significant" if c.get("significant") else "not significant"
            )
            lines.append(
                f"  {m['metric']} ({m['role']}): {c['variant']} {est:+.1%} "
                f"[{lo:+.1%}, {hi:+.1%}] {verdict}"
            )
    lines.append(
        f"recommendation: {decision.get('recommendation')}"
        + (f" ({decision['variant']})" if decision.get("variant") else "")
    )
    lines += [f"  - {reason}" for reason in decision.get("reasons") or []]
    lines += [
        f"report: {summary.report_url}  (Markdown: add ?format=md)",
        "  it needs the API key as a header; save it and open the file:",
        f"  {report_command or 'trialbook report ' + summary.experiment} --out report.html",
    ]
    return "\n".join(lines)


def api_key_from_env() -> str | None:
    """``TRIALBOOK_API_KEY``, else ``TRIALBOOK_BOOTSTRAP_ADMIN_KEY``."""
    return os.environ.get("TRIALBOOK_API_KEY") or os.environ.get("TRIALBOOK_BOOTSTRAP_ADMIN_KEY")


def demo(
    url: Annotated[
        str, typer.Option(envvar="TRIALBOOK_URL", help=f"server URL (default {DEFAULT_URL})")
    ] = DEFAULT_URL,
    key: Annotated[
        str | None,
        typer.Option(
            help="admin API key (default: $TRIALBOOK_API_KEY or $TRIALBOOK_BOOTSTRAP_ADMIN_KEY)"
        ),
    ] = None,
    units: Annotated[int, typer.Option(help="users to simulate (default 20000)")] = 20_000,
    seed: Annotated[int, typer.Option(help="simulation seed (default 7)")] = 7,
    warehouse: Annotated[
        str | None,
        typer.Option(
            envvar="WAREHOUSE",
            help="duckdb: write the events to a warehouse file and analyse them there (§13)",
        ),
    ] = None,
    warehouse_path: Annotated[
        str, typer.Option(help="the DuckDB file the warehouse demo writes")
    ] = "trialbook-demo.duckdb",
) -> int:
    """Create and simulate a demo experiment against a running server."""
    if warehouse not in (None, "", "duckdb"):
        raise typer.BadParameter(
            "the only warehouse the demo writes is 'duckdb'", param_hint="--warehouse"
        )
    return run(
        argparse.Namespace(
            url=url,
            key=key,
            units=units,
            seed=seed,
            warehouse=warehouse or None,
            warehouse_path=warehouse_path,
        )
    )


def resolve_key(
    given: str | None, role: str, purpose: str
) -> contextlib.AbstractContextManager[str]:
    """The key to call the server with: ``given``, the environment, else a local one-run key.

    Raises
    ------
    service.local.DatabaseNotReadyError
        When no key is given and there is no local database to mint one in.
    """
    from service.local import local_api_key

    key = given or api_key_from_env()
    if key:
        return contextlib.nullcontext(key)
    return local_api_key(role, purpose)


def no_key_message(command: str, exc: Exception) -> str:
    """Why a command found no key, and the three ways to give one."""
    return (
        f"trialbook {command}: no API key given and none can be minted here ({exc}). Give one with "
        "--key or TRIALBOOK_API_KEY (the server printed an admin key at its first start), or run "
        "this on the server machine, beside its database (TRIALBOOK_DATABASE_URL)."
    )


def unknown_key_message(command: str, url: str, local: bool) -> str:
    """A 401 from the server: with a local key, the server serves another database."""
    from service.config import get_settings

    if local:
        return (
            f"trialbook {command}: the server at {url} does not know the key minted in the "
            f"database at {get_settings().database_url}: it serves another database. Give a key "
            "with --key or TRIALBOOK_API_KEY."
        )
    return (
        f"trialbook {command}: the server at {url} refused the API key (401): "
        "check --key or TRIALBOOK_API_KEY."
    )


def report_command(args: argparse.Namespace, experiment: str) -> str:
    """The ``trialbook report`` line the demo prints: the same program, URL and key source."""
    from service.local import cli_program

    parts = [cli_program(), "report", experiment]
    if args.url.rstrip("/") != DEFAULT_URL:
        parts += ["--url", args.url]
    if args.key:
        parts += ["--key", args.key]
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``trialbook demo``."""
    import httpx

    from service.local import DatabaseNotReadyError

    local = not (args.key or api_key_from_env())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the bar
    try:
        with resolve_key(args.key, "admin", "trialbook demo") as key:
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=args.url, headers=headers, timeout=60.0) as client:
                client.get("/healthz").raise_for_status()
                if client.get("/v1/keys").status_code == 401:
                    print(unknown_key_message("demo", args.url, local), file=sys.stderr)
                    return 1
                print(
                    f"trialbook demo against {args.url}: simulating {args.units:,} users",
                    file=sys.stderr,
                )
                warehouse = (
                    Path(args.warehouse_path).resolve()
                    if getattr(args, "warehouse", None)
                    else None
                )
                if warehouse is not None:
                    print(f"  events written to the DuckDB file {warehouse}", file=sys.stderr)
                summary = run_demo(
                    client,
                    base_url=args.url,
                    units=args.units,
                    seed=args.seed,
                    progress=sys.stderr,
                    warehouse=warehouse,
                )
    except DatabaseNotReadyError as exc:
        print(no_key_message("demo", exc), file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:
        print(
            f"trialbook demo: cannot reach {args.url} ({exc}); start it with `make run`",
            file=sys.stderr,
        )
        return 1
    except DemoError as exc:
        print(f"trialbook demo: {exc}", file=sys.stderr)
        return 1
    print(summary_text(summary, report_command(args, summary.experiment)))
    return 0
