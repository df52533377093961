"""Catalog snapshots of a live schema, their diff, and the committed expected snapshots."""
