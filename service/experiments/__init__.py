"""The experiment registry: protocol, lifecycle, phases, layers and the audit trail (§2–3)."""
