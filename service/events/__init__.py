"""Event ingestion: exposures and conversions (product.md §5)."""
