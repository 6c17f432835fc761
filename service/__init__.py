"""Trialbook service: the HTTP API over the experiment registry, events, assignment and results."""
