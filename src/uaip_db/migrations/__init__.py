"""The revision graph, the Alembic runner, the migration lock, the ledger, the baseline."""
