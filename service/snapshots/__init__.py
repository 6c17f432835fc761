"""Results as stored snapshots (``product.md`` §12): refreshed on a schedule, on demand and on
stop; read instantly; over time (one point per day of the phase) and by slice (the protocol's
``dimensions``). The analysis itself is :func:`service.analysis.service.analyse`; this package
decides when it runs, on which cut of the data, and stores what it returns."""
