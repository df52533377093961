"""Schema documentation rendered from catalog snapshots."""
