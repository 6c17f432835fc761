"""Protocol templates: an organisation's standard defaults and rules, versioned; and approval."""
