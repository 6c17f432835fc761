"""One settings class, read from ``TRIALBOOK_*`` environment variables."""

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Service configuration.

    Every field is read from the environment variable ``TRIALBOOK_<FIELD>``.
    """

    model_config = SettingsConfigDict(env_prefix="TRIALBOOK_", extra="ignore")

    database_url: str = "sqlite:///./trialbook.db"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    # With several workers, uvicorn's parent pings each one and replaces any that does not answer
    # in this many seconds. A worker answers only once its interpreter is up: uvicorn's default of
    # 5 s killed every worker while it started on a busy machine, forever (no server ever answered).
    worker_healthcheck_seconds: int = Field(default=60, ge=1, le=3600)
    bootstrap_admin_key: str | None = None
    # Largest accepted request body, bytes (5 MiB: the events batch limit of the product spec).
    max_body_bytes: int = 5 * 1024 * 1024
    log_level: str = "info"
    # How long one process trusts an SDK key lookup and config version (seconds; 0 = no cache).
    sdk_cache_seconds: float = 1.0
    # Event batches one process writes at once (waiting for or holding the write lock); one more
    # is shed with 429 + Retry-After (service/events).
    ingest_max_concurrency: int = 32
    # The server process's GIL switch interval, milliseconds (Python's default is 5). The event
    # writer gives the GIL up around every SQLite statement and waits up to this long to get it
    # back from a thread validating the next batch; 0.5 ms measured best (bench/ingest.py).
    gil_switch_ms: float = Field(default=0.5, gt=0, le=100)
    # Health monitoring interval in seconds (0 disables the in-process scheduler).
    check_interval_seconds: float = 300.0
    # Webhook URLs may resolve to loopback/private/link-local addresses (receivers on this host
    # or network; tests). Off: only public addresses, checked at registration and each delivery.
    webhook_allow_private: bool = False
    # Authentication failures (a wrong, unknown or revoked key) one client address may make within
    # the window before its further attempts get 429 + Retry-After (0 = no limit). Keys are 256-bit
    # random tokens: 20 a minute leaves guessing hopeless and a misconfigured client visible.
    auth_failure_limit: int = Field(default=20, ge=0)
    auth_failure_window_seconds: float = Field(default=60.0, gt=0, le=86_400)
    # Results snapshots of running experiments are refreshed this often, seconds (0 disables the
    # in-process scheduler; product.md §12).
    refresh_interval_seconds: float = 3600.0
    # Health alerts (service/alerts): hours without a received exposure, while running, before the
    # stream counts as stalled; the interaction check's level of a pair's (Bonferroni) family, and
    # the fewest shared units it tests.
    stalled_after_hours: float = 24.0
    interaction_alpha: float = 0.001
    interaction_min_units: int = 200


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings (cached; tests clear the cache)."""
    return Settings()
