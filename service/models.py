"""Import every table so that SQLModel.metadata is complete (Alembic and tests use this)."""

from service.experiments.models import (  # noqa: F401
    AuditEntry,
    Experiment,
    ExperimentMetric,
    ExperimentPhase,
    Layer,
)
from service.keys.models import ApiKey  # noqa: F401
from service.metrics.models import Metric  # noqa: F401
