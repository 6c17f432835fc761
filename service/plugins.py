"""Import the modules that register CLI commands and lifecycle hooks."""

import service.alerts.commands  # noqa: F401,E402  (trialbook check)
import service.insights.service  # noqa: F401,E402  (outcome snapshots at stop/conclude)
import service.reports.cli  # noqa: F401  (trialbook report, trialbook demo)
import service.templates.service  # noqa: F401,E402  (template defaults/rules, approval)
import service.webhooks.service  # noqa: F401,E402  (webhooks on lifecycle transitions)
