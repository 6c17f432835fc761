"""The standardized experiment report (HTML and Markdown) and the index page (product.md §7)."""
