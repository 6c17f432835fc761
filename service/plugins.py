"""Import the modules that register CLI commands and lifecycle hooks."""

import service.alerts.commands  # (trialbook check)
import service.insights.service  # (outcome snapshots at stop/conclude)
import service.reports.cli
import service.snapshots.service  # (a results snapshot at stop)
import service.templates.service  # (template defaults/rules, approval)
import service.webhooks.service  # noqa: F401  (webhooks on lifecycle transitions)
