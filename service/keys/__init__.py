"""API keys and roles (product.md §10)."""
