"""Many databases of one schema (a tenant or region each), migrated as one release."""
