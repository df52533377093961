"""The baseline: database/init.sql (schema v1.0.0), loading it (seed), adopting a database built
from it, and running SQL scripts inside a revision."""

from __future__ import annotations

from typing import Any

from uaip_db import paths
from uaip_db.catalog import expected
from uaip_db.catalog.snapshot import diff, take_from
from uaip_db.errors import CheckFailed
from uaip_db.migrations import applied, runner
from uaip_db.pg import connection, explain
from uaip_db.settings import DatabaseConfig

BASELINE_REVISION = "03033cebb647"
BASELINE_TABLES = (
    "sessions",
    "stage_data",
    "conversation_history",
    "checkpoints",
    "project_charters",
    "quality_metrics",
    "consistency_reports",
)
BASELINE_FUNCTIONS = (
    "update_sessions_timestamp",
    "update_stage_data_timestamp",
    "get_active_sessions_count",
    "get_session_progress",
    "mark_abandoned_sessions",
)
BASELINE_TRIGGERS = ("trigger_update_sessions_timestamp", "trigger_update_stage_data_timestamp")


def init_sql_text() -> str:
    return paths.init_sql().read_text(encoding="utf-8")


def run_script(op: Any, script: str) -> None:
    """Run a multi-statement SQL script inside the current migration (or print it, offline).

    Online it goes to the driver as one simple-protocol query, so dollar-quoted bodies, `%`
    and `:name` reach PostgreSQL untouched; offline it is written out verbatim.
    """
    context = op.get_context()
    if context.as_sql:
        context.impl.static_output(script.rstrip() + "\n")
        return
    context.connection.connection.driver_connection.execute(script)


def seed(config: DatabaseConfig) -> None:
    """Load init.sql into the configured database, refusing one that already has the schema."""
    import psycopg  # noqa: PLC0415

    with connection(config, autocommit=False) as conn:
        present = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = ANY(%s)",
            (list(BASELINE_TABLES),),
        ).fetchone()
        if present and present[0]:
            raise CheckFailed(
                f"The {config.where()} already has UAIP tables; db.seed only fills an empty "
                "database. Use a new DB_NAME, or `inv db.downgrade --rev base --yes` first."
            )
        try:
            conn.execute(init_sql_text().encode())
            conn.commit()
        except psycopg.Error as error:
            conn.rollback()
            raise CheckFailed(
                f"init.sql failed on {config.where()}: {explain(error, config)}; nothing was kept."
            ) from None


def adopt(config: DatabaseConfig) -> bool:
    """A container's first start runs init.sql, leaving v1.0.0 with no recorded revision.

    When the schema is exactly the baseline's, record the baseline so `inv db.upgrade` can go
    on from there (True); anything else is left for `inv db.stamp --rev auto` to explain.
    """

    with connection(config) as conn:
        if applied.current_revisions_on(conn):
            return False
        actual = take_from(conn)
    if not actual.objects or diff(expected.snapshot(BASELINE_REVISION), actual):
        return False
    runner.stamp(config, BASELINE_REVISION)
    return True
