"""Results and decisions: raw events → per-variant sufficient statistics (in SQL) →
``stats.analyze`` → the §6 results contract and a recommendation.

The report half (``service.reports``) calls :func:`service.analysis.service.compute_results`.
"""
