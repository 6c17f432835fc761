"""Helpers shared by the test suites (and the benches): a live server in a subprocess."""
