"""Initial schema from init.sql

Schema v1.0.0: builds exactly what database/init.sql builds (the file is frozen, so this
revision runs it verbatim) and its downgrade removes exactly that.

Revision ID: 03033cebb647
Revises:
Create Date: 2025-01-15 09:00:00.000000

"""

from collections.abc import Sequence

from alembic import op

from uaip_db.schema import init_sql_text, run_script

# revision identifiers, used by Alembic.
revision: str = "03033cebb647"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Downgrading to base drops every table of the scoping assistant with its rows.
destroys_data_on_downgrade = "every UAIP table"


def upgrade() -> None:
    """Build schema v1.0.0 from database/init.sql."""
    run_script(op, init_sql_text())


def downgrade() -> None:
    """Remove every object init.sql created."""
    op.execute("DROP TRIGGER IF EXISTS trigger_update_stage_data_timestamp ON stage_data")
    op.execute("DROP TRIGGER IF EXISTS trigger_update_sessions_timestamp ON sessions")
    op.execute("DROP FUNCTION IF EXISTS mark_abandoned_sessions()")
    op.execute("DROP FUNCTION IF EXISTS get_session_progress(uuid)")
    op.execute("DROP FUNCTION IF EXISTS get_active_sessions_count()")
    op.execute("DROP FUNCTION IF EXISTS update_stage_data_timestamp()")
    op.execute("DROP FUNCTION IF EXISTS update_sessions_timestamp()")
    for table in (
        "consistency_reports",
        "quality_metrics",
        "project_charters",
        "checkpoints",
        "conversation_history",
        "stage_data",
        "sessions",
    ):
        op.drop_table(table)
    op.execute('DROP EXTENSION IF EXISTS "uuid-ossp"')
