"""Import the modules that register CLI commands and lifecycle hooks."""
