"""Server-side assignment, the SDK config and the OFREP endpoints (product.md §4, §9)."""
