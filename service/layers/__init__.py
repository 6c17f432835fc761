"""Layers: mutually exclusive experiments sharing traffic (product.md §9)."""
