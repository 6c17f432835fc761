"""The engines a data source runs on, each driver imported only when a source of it runs.

Every statement is checked to be one read-only SELECT (``query.read_only_problem``) before it
runs, and runs in a worker thread of its source's own pool with the source's timeout: past it
the statement is cancelled in the engine (DuckDB/SQLite ``interrupt``, PostgreSQL
``statement_timeout`` and a cancel, ClickHouse ``max_execution_time``, Spark a cancelled job
group) and :class:`QueryTimeoutError` is raised. A slow source occupies only its own pool, so it
never holds up another source's refresh or a request that does not read it.

The connection is also opened read-only where the engine allows it (SQLite ``mode=ro``, DuckDB
``read_only``, PostgreSQL ``default_transaction_read_only``, ClickHouse ``readonly=1``).

Errors (all :class:`WarehouseError`, an ``AppError`` rendered as problem+json, and the text of a
failed snapshot): :class:`DriverMissingError` (the extra to install),
:class:`ConnectionFailedError`, :class:`QueryFailedError`, :class:`QueryTimeoutError`,
:class:`StatementRefusedError`.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from typing import Any, Protocol

from service.analysis.query import DIALECTS, read_only_problem
from service.errors import AppError

__all__ = [
    "ENGINES",
    "ConnectionFailedError",
    "DriverMissingError",
    "Engine",
    "QueryFailedError",
    "QueryTimeoutError",
    "StatementRefusedError",
    "WarehouseError",
    "connect",
    "run",
]

Rows = list[tuple[Any, ...]]


class WarehouseError(AppError):
    status = 502
    code = "data_source_error"
    title = "The data source failed"


class DriverMissingError(WarehouseError):
    status = 503
    code = "driver_missing"
    title = "The engine's driver is not installed"


class ConnectionFailedError(WarehouseError):
    status = 502
    code = "data_source_connection_failed"
    title = "The data source refused the connection"


class QueryFailedError(WarehouseError):
    status = 502
    code = "data_source_query_failed"
    title = "The data source refused a statement"


class QueryTimeoutError(WarehouseError):
    status = 504
    code = "data_source_timeout"
    title = "The data source did not answer in time"


class StatementRefusedError(WarehouseError):
    status = 422
    code = "statement_not_read_only"
    title = "The statement is not a read-only SELECT"


# engine -> (module to import, extra that installs it)
_DRIVERS: dict[str, tuple[str, str]] = {
    "duckdb": ("duckdb", "duckdb"),
    "clickhouse": ("chdb", "clickhouse"),
    "spark": ("pyspark", "spark"),
    "bigquery": ("google.cloud.bigquery", "bigquery"),
    "snowflake": ("snowflake.connector", "snowflake"),
    "trino": ("trino", "trino"),
    "databricks": ("databricks.sql", "databricks"),
}
ENGINES = tuple(DIALECTS)
# Engines whose statements are rendered and checked here but that have no runner yet.
RENDER_ONLY = frozenset({"bigquery", "snowflake", "trino", "databricks"})


def _driver(engine: str, module: str | None = None) -> Any:
    name, extra = _DRIVERS[engine]
    try:
        return importlib.import_module(module or name)
    except ImportError as exc:
        raise DriverMissingError(
            f"The {engine} engine needs its driver ({(module or name).split('.')[0]}), which is"
            f" not installed: pip install 'trialbook-server[{extra}]'.",
            code="driver_missing",
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]


def secret(connection: Mapping[str, Any], name: str) -> str | None:
    """A secret given inline (``name``) or as an environment variable (``name_env``)."""
    env = connection.get(f"{name}_env")
    if env:
        value = os.environ.get(str(env))
        if value is None:
            raise ConnectionFailedError(
                f"The environment variable {env!r} (connection.{name}_env) is not set."
            )
        return value
    value = connection.get(name)
    return None if value is None else str(value)


class Engine(Protocol):
    """An open connection: runs one statement, can be interrupted from another thread."""

    dialect: str

    def query(self, sql: str, timeout: float) -> tuple[list[str], Rows]: ...

    def interrupt(self) -> None: ...

    def close(self) -> None: ...


# ------------------------------------------------------------------------------------ engines


class _SQLite:
    dialect = "sqlite"

    def __init__(self, connection: Mapping[str, Any]) -> None:
        path = str(connection.get("path") or "")
        if not path or not os.path.exists(path):
            raise ConnectionFailedError(f"No SQLite database at connection.path {path!r}.")
        try:
            self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise ConnectionFailedError(f"SQLite: {_first_line(exc)}") from exc

    def query(self, sql: str, timeout: float) -> tuple[list[str], Rows]:
        cur = self.conn.execute(sql)
        names = [d[0] for d in cur.description or ()]
        return names, [tuple(r) for r in cur.fetchall()]

    def interrupt(self) -> None:
        self.conn.interrupt()

    def close(self) -> None:
        self.conn.close()


class _PostgreSQL:
    dialect = "postgres"

    def __init__(self, connection: Mapping[str, Any], timeout: float) -> None:
        import psycopg

        url = secret(connection, "url")
        kwargs: dict[str, Any] = {}
        if url is None:
            for key in ("host", "port", "dbname", "user"):
                if connection.get(key) is not None:
                    kwargs[key] = connection[key]
            password = secret(connection, "password")
            if password is not None:
                kwargs["password"] = password
        try:
            self.conn = psycopg.connect(
                url or "",
                connect_timeout=max(1, int(timeout)),
                autocommit=True,
                options=(
                    "-c default_transaction_read_only=on"
                    f" -c statement_timeout={max(1, int(timeout * 1000))}"
                ),
                **kwargs,
            )
        except psycopg.Error as exc:
            raise ConnectionFailedError(f"PostgreSQL: {_first_line(exc)}") from exc

    def query(self, sql: str, timeout: float) -> tuple[list[str], Rows]:
        with self.conn.cursor() as cur:
            cur.execute(sql.replace("%", "%%"))  # no parameters: a literal % stays a %
            names = [d.name for d in cur.description or ()]
            return names, [tuple(r) for r in cur.fetchall()]

    def interrupt(self) -> None:
        self.conn.cancel_safe() if hasattr(self.conn, "cancel_safe") else self.conn.cancel()

    def close(self) -> None:
        self.conn.close()


def _out_of_memory(
    engine: str, memory: int | None, unbounded: str, exc: BaseException
) -> QueryFailedError:
    """An engine's out of memory, naming the bound to raise (``unbounded``: what bounded it
    without one)."""
    bound = f"its connection.memory_limit_mb of {int(memory)}" if memory else unbounded
    return QueryFailedError(
        f"{engine} ran out of memory within {bound}: raise connection.memory_limit_mb"
        f" ({_first_line(exc)})"
    )


class _DuckDB:
    """DuckDB in this process, its database file opened read-only.

    Its memory is this process's: ``connection.memory_limit_mb`` bounds it (DuckDB's own default
    is 80 % of the machine's RAM; a 10M-unit refresh takes about 6 GB, bench/warehouse.py), and
    past the bound the engine spills to a temporary directory of this connection's own, removed
    at close (DuckDB's default would write beside the organisation's database file, a directory
    two processes would share)."""

    dialect = "duckdb"

    def __init__(self, connection: Mapping[str, Any]) -> None:
        duckdb = _driver("duckdb")
        path = str(connection.get("path") or "")
        if not path or not os.path.exists(path):
            raise ConnectionFailedError(f"No DuckDB database at connection.path {path!r}.")
        try:
            self.conn = duckdb.connect(path, read_only=True)
        except duckdb.Error as exc:
            raise ConnectionFailedError(f"DuckDB: {_first_line(exc)}") from exc
        self.spill = tempfile.mkdtemp(prefix="trialbook-duckdb-")
        self.conn.execute("SET temp_directory = '" + self.spill.replace("'", "''") + "'")
        threads = connection.get("threads")
        if threads:
            self.conn.execute(f"SET threads = {int(threads)}")
        self.memory = connection.get("memory_limit_mb")
        if self.memory:
            self.conn.execute(f"SET memory_limit = '{int(self.memory)}MiB'")
        self.out_of_memory = duckdb.OutOfMemoryException

    def query(self, sql: str, timeout: float) -> tuple[list[str], Rows]:
        try:
            cur = self.conn.execute(sql)
            names = [d[0] for d in cur.description or ()]
            return names, [tuple(r) for r in cur.fetchall()]
        except self.out_of_memory as exc:
            raise _out_of_memory(
                "DuckDB",
                self.memory,
                "the memory DuckDB may take (80 % of the RAM; connection.memory_limit_mb)",
                exc,
            ) from exc

    def interrupt(self) -> None:
        self.conn.interrupt()

    def close(self) -> None:
        try:
            self.conn.close()
        finally:
            shutil.rmtree(self.spill, ignore_errors=True)


# chdb runs one ClickHouse engine per process: its sessions are used one at a time.
_CHDB_LOCK = threading.Lock()
_CHDB_SESSIONS: dict[str, Any] = {}


class _ClickHouse:
    """chdb (the ClickHouse engine in-process, ``connection.path``: its data directory) or a
    ClickHouse server through clickhouse-connect (``host``, ``port``, ``username``,
    ``password`` or ``password_env``, ``database``).

    chdb's memory is this process's (about 1 GB per million units unbounded, bench/warehouse.py):
    ``connection.memory_limit_mb`` bounds each statement (``max_memory_usage``) and lets its
    grouping, sorting and join spill to disk past a third of it, to the ``tmp/`` directory of the
    data directory (ClickHouse's own; the files are gone when the statement ends). On a server
    the same settings bound the statement there."""

    dialect = "clickhouse"

    def __init__(self, connection: Mapping[str, Any], timeout: float) -> None:
        self.path = connection.get("path")
        self.client: Any = None
        self.memory = connection.get("memory_limit_mb")
        self.settings: dict[str, Any] = {}
        if self.memory:
            limit = int(self.memory) * 1024 * 1024
            self.settings = {
                "max_memory_usage": limit,
                "max_bytes_before_external_group_by": limit // 3,
                "max_bytes_before_external_sort": limit // 3,
                "join_algorithm": "grace_hash",
                "max_bytes_in_join": limit // 3,
            }
        if self.path is not None:
            _driver("clickhouse")
            if not os.path.isdir(str(self.path)):
                raise ConnectionFailedError(
                    f"No chdb data directory at connection.path {self.path!r}."
                )
            return
        cc = _driver("clickhouse", "clickhouse_connect")
        try:
            self.client = cc.get_client(
                host=connection.get("host", "localhost"),
                port=int(connection.get("port", 8123)),
                username=connection.get("username", "default"),
                password=secret(connection, "password") or "",
                database=connection.get("database", "default"),
                connect_timeout=max(1, int(timeout)),
                send_receive_timeout=max(1, int(timeout)),
                settings={
                    "readonly": 1,
                    "max_execution_time": max(1, int(timeout)),
                    **self.settings,
                },
            )
        except Exception as exc:
            raise ConnectionFailedError(f"ClickHouse: {_first_line(exc)}") from exc

    def query(self, sql: str, timeout: float) -> tuple[list[str], Rows]:
        try:
            return self._query(sql, timeout)
        except Exception as exc:
            if "MEMORY_LIMIT_EXCEEDED" not in str(exc):
                raise
            raise _out_of_memory(
                "ClickHouse",
                self.memory,
                "the memory the engine may take (connection.memory_limit_mb)",
                exc,
            ) from exc

    def _query(self, sql: str, timeout: float) -> tuple[list[str], Rows]:
        if self.client is not None:
            result = self.client.query(sql)
            return list(result.column_names), [tuple(r) for r in result.result_rows]
        from chdb import session as chdb_session

        settings = {"max_execution_time": max(1, int(timeout)), "readonly": 1, **self.settings}
        listed = ", ".join(
            f"{k} = '{v}'" if isinstance(v, str) else f"{k} = {v}" for k, v in settings.items()
        )
        bounded = f"{sql} SETTINGS {listed}"
        with _CHDB_LOCK:
            path = str(self.path)
            sess = _CHDB_SESSIONS.get(path)
            if sess is None:
                for other in _CHDB_SESSIONS.values():
                    other.close()
                _CHDB_SESSIONS.clear()
                sess = _CHDB_SESSIONS[path] = chdb_session.Session(path)  # type: ignore[no-untyped-call]
            raw = sess.query(bounded, "JSONCompact")
        blob = json.loads(str(raw) or "{}")
        names = [m["name"] for m in blob.get("meta", [])]
        return names, [tuple(r) for r in blob.get("data", [])]

    def interrupt(self) -> None:
        pass  # max_execution_time bounds the statement in the engine

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def close_chdb() -> None:
    """Close the process's chdb session (tests that write a chdb directory call it first)."""
    with _CHDB_LOCK:
        for sess in _CHDB_SESSIONS.values():
            sess.close()
        _CHDB_SESSIONS.clear()


_SPARK_LOCK = threading.Lock()


class _Spark:
    """Spark SQL: ``connection.master`` (``local[2]``, or a cluster's URL) and ``files``
    (``{view name: path}`` of Parquet, CSV or JSON files registered as temporary views) or the
    session catalog's tables."""

    dialect = "spark"

    def __init__(self, connection: Mapping[str, Any]) -> None:
        _driver("spark")
        from pyspark.sql import SparkSession

        master = str(connection.get("master") or "local[2]")
        try:
            with _SPARK_LOCK:
                self.spark = (
                    SparkSession.builder.master(master)
                    .appName("trialbook")
                    .config("spark.sql.session.timeZone", "UTC")
                    .config("spark.ui.enabled", "false")
                    # the statements return a few rows: few shuffle partitions (a cluster's
                    # defaults come from its own configuration when the session exists there)
                    .config("spark.sql.shuffle.partitions", "2")
                    .getOrCreate()
                )
                for name, path in dict(connection.get("files") or {}).items():
                    fmt = str(path).rsplit(".", 1)[-1].lower()
                    reader = self.spark.read
                    if fmt == "csv":
                        df = reader.option("header", "true").option("inferSchema", "true").csv(path)
                    elif fmt == "json":
                        df = reader.json(path)
                    else:
                        df = reader.parquet(path)
                    df.createOrReplaceTempView(str(name))
        except DriverMissingError:
            raise
        except Exception as exc:
            raise ConnectionFailedError(f"Spark: {_first_line(exc)}") from exc
        self.group = f"trialbook-{uuid.uuid4().hex}"

    def query(self, sql: str, timeout: float) -> tuple[list[str], Rows]:
        sc = self.spark.sparkContext
        sc.setJobGroup(self.group, "trialbook aggregation", interruptOnCancel=True)
        df = self.spark.sql(sql)
        return list(df.columns), [tuple(r) for r in df.collect()]

    def interrupt(self) -> None:
        self.spark.sparkContext.cancelJobGroup(self.group)

    def close(self) -> None:
        pass  # the session is the process's; it stays for the next refresh


def _open(engine: str, connection: Mapping[str, Any], timeout: float) -> Engine:
    if engine == "sqlite":
        return _SQLite(connection)
    if engine == "postgresql":
        return _PostgreSQL(connection, timeout)
    if engine == "duckdb":
        return _DuckDB(connection)
    if engine == "clickhouse":
        return _ClickHouse(connection, timeout)
    if engine == "spark":
        return _Spark(connection)
    if engine in RENDER_ONLY:
        _driver(engine)
        raise ConnectionFailedError(
            f"The {engine} engine's statements are rendered and checked, but this version has no"
            f" runner for it yet."
        )
    raise ConnectionFailedError(f"Unknown engine {engine!r}.")


# ---------------------------------------------------------------------------- running bounded

_POOLS: dict[str, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()
POOL_WORKERS = 2  # statements of one source at a time (a refresh runs them one after another)


def _pool(key: str) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = ThreadPoolExecutor(POOL_WORKERS, f"warehouse-{key}")
        return pool


def _bounded(
    key: str, timeout: float, what: str, fn: Callable[[], Any], cancel: Callable[[], None] | None
) -> Any:
    future = _pool(key).submit(fn)
    try:
        return future.result(timeout=timeout)
    except FutureTimeout:
        if cancel is not None:
            with suppress(Exception):  # the engine may be gone; the timeout stands
                cancel()
        raise QueryTimeoutError(
            f"Data source '{key}' did not {what} within its timeout of {timeout:g} s"
            " (timeout_seconds); the statement was cancelled."
        ) from None


@contextmanager
def connect(
    key: str, engine: str, connection: Mapping[str, Any], timeout: float
) -> Iterator[Engine]:
    """An open connection to a source, opened in its pool within ``timeout``."""
    conn: Engine = _bounded(
        key, timeout, "connect", lambda: _open(engine, connection, timeout), None
    )
    try:
        yield conn
    finally:
        with suppress(Exception):
            conn.close()


def run(key: str, conn: Engine, sql: str, timeout: float) -> tuple[list[str], Rows]:
    """Run one read-only statement on ``conn`` in the source's pool, bounded by ``timeout``."""
    problem = read_only_problem(sql, conn.dialect)
    if problem is not None:
        raise StatementRefusedError(f"The statement was not run: {problem}.")

    def call() -> tuple[list[str], Rows]:
        try:
            return conn.query(sql, timeout)
        except WarehouseError:
            raise
        except Exception as exc:
            text = _first_line(exc)
            if "TIMEOUT" in text.upper() or "canceling statement due to statement timeout" in text:
                raise QueryTimeoutError(
                    f"Data source '{key}' did not answer within its timeout of {timeout:g} s"
                    f" (timeout_seconds): {text}"
                ) from exc
            raise QueryFailedError(f"Data source '{key}' refused a statement: {text}") from exc

    result: tuple[list[str], Rows] = _bounded(key, timeout, "answer", call, conn.interrupt)
    return result
