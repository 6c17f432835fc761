"""The knobs of event ingestion, each with the measurement that set it.

Every figure is from ``bench/ingest.py`` (SQLite, one uvicorn worker, 8 clients, batches of
1,000) unless it says otherwise. The process-wide knobs of a server process (the GIL switch
interval, ``TRIALBOOK_GIL_SWITCH_MS``, and the garbage collector's thresholds) are set in
``service/app.py``, which a test run does not import; the in-flight bound is
``Settings.ingest_max_concurrency`` (``TRIALBOOK_INGEST_MAX_CONCURRENCY``).

Multi-row statements (:meth:`service.events.store.Store.insert_flat`), ``SQLITE_CHUNKS``
    Why not ``executemany`` of a single-row statement? The driver releases the GIL around
    each row's step and must take it back after; while request threads validate, the writer
    waits for it once per row (up to the switch interval, or a whole pydantic call), and under
    load it inserted about 5,000 rows/s instead of 60,000. A statement of many rows takes the GIL
    back once for all of them.

    Why fixed sizes? Compiling a statement costs about 3.6 µs a row, as much as inserting it,
    and the driver caches compiled statements by their text: a few sizes are compiled once per
    connection. The rest after the full chunks goes in one statement of the smallest size that
    holds it, padded with copies of its last row, which the statement's own ``ON CONFLICT``
    makes no-ops: ``DO NOTHING`` for events (and ``total_changes`` counts only real inserts),
    an idempotent ``DO UPDATE`` for ``exposure_unit``. A padded row costs a lookup in the unique
    index; one more statement costs the writer waits for the GIL, which measured dearer up to
    half a chunk of padding. The largest size keeps under SQLite's 32,766 bound values
    (SQLite >= 3.32).

One request thread at a time prepares (``service.events.service.python_work``)
    The request threads of a process parse, validate and plan one at a time. They hold the GIL
    for all of it, so they ran one at a time anyway; what the lock changes is that only one of
    them competes with the writer for the GIL each time the writer comes back from SQLite (at
    every statement), instead of eight, so the writer waits less and the database stays busy:
    about 15 % more events/s on SQLite, with ``TRIALBOOK_GIL_SWITCH_MS``.

Group commit (:class:`service.events.writer.GroupWriter`), ``GROUP_MAX_EVENTS``
    On SQLite the transactions of a database are serialized anyway, and one transaction for
    several requests pays once for the commit (an fsync with ``synchronous=FULL``), the
    statement round trips and the GIL hand-overs that the thread holding the write lock waits
    for while other request threads validate (a long C call such as pydantic's keeps the GIL for
    its whole duration). On PostgreSQL it saves the same round trips; the workers (processes)
    still write concurrently. Threads of a process queue there rather than on SQLite's busy
    handler, which polls with sleeps of up to 100 ms. A group holds at most ``GROUP_MAX_EVENTS``
    events (and at least one request).

The writer's own connection (:class:`service.events.writer.WriterConnection`), ``WRITER_CACHE_KIB``
    On SQLite a connection's page cache survives between its transactions as long as no other
    connection wrote meanwhile; the pool hands out its connections in turn (readers too), so a
    writer drawing from it starts nearly every transaction with a cold cache and reads the
    indexes' pages again. Kept, the connection is the only one that writes events, and its
    cache (larger than the default 2 MiB) stays warm: about 15 % more events/s.

Plans from the writer's last reading of the experiments, ``TARGETS_FRESH_SECONDS``
    A plan made from a reading that is out of date costs only its remaking: the writer reads the
    experiments again in its transaction and compares. So a request thread whose experiments
    were all read less than ``TARGETS_FRESH_SECONDS`` ago plans without a query of its own.
"""

from __future__ import annotations

# Rows per multi-row INSERT on SQLite, largest first (at most 32,766 bound values).
SQLITE_CHUNKS = (2048, 1024, 512, 256)
ROWS_PER_LOOKUP = 500  # event ids per ``IN (...)`` when reading stored hashes
GROUP_MAX_EVENTS = 20_000  # events in one group-commit transaction
WRITER_CACHE_KIB = 64 * 1024  # SQLite page cache of the writer's connection, KiB
TARGETS_FRESH_SECONDS = 1.0  # age of the experiments' reading a request thread plans from
RETRY_AFTER_SECONDS = 1  # ``Retry-After`` of a request shed by the in-flight bound
