"""Every table of the service, imported so that SQLModel.metadata is complete (Alembic, tests)."""

from service.alerts.models import Alert  # noqa: F401
from service.analysis.looks import AnalysisLook  # noqa: F401
from service.events.models import Conversion, Exposure, ExposureUnit  # noqa: F401
from service.experiments.models import (  # noqa: F401
    AuditEntry,
    Experiment,
    ExperimentMetric,
    ExperimentPhase,
    Layer,
)
from service.insights.models import ExperimentOutcome  # noqa: F401
from service.keys.models import ApiKey  # noqa: F401
from service.metrics.models import Metric  # noqa: F401
from service.reports.models import ShareLink  # noqa: F401
from service.sessions.models import BrowserSession  # noqa: F401
from service.snapshots.models import RefreshClaim, ResultsDay, ResultsSnapshot  # noqa: F401
from service.templates.models import ProtocolTemplate, ProtocolTemplateVersion  # noqa: F401
from service.warehouse.models import DataSource  # noqa: F401
from service.webhooks.models import WebhookDelivery, WebhookSubscription  # noqa: F401
