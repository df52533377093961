"""Checks of a database or of the revisions: status, verify, lint, round trip."""
