"""The metrics catalogue (product.md §1)."""
