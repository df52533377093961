"""Add sessions.email with a non-blocking index

Schema v1.1.0, part 1. The index is built CONCURRENTLY, outside the migration's transaction,
so writers to sessions are never blocked. That makes this revision commit in pieces: if it is
interrupted, running it again finishes the job (IF NOT EXISTS everywhere, and an INVALID index
left by an interrupted build is dropped and rebuilt).

Revision ID: 8f2b6c1d4e7a
Revises: 03033cebb647
Create Date: 2025-02-03 10:00:00.000000

"""

from collections.abc import Sequence

from alembic import op

from uaip_db.ops import create_index_concurrently, drop_index_concurrently

# revision identifiers, used by Alembic.
revision: str = "8f2b6c1d4e7a"
down_revision: str | Sequence[str] | None = "03033cebb647"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

destroys_data_on_downgrade = "sessions.email"


def upgrade() -> None:
    """Add the nullable email column and index it without blocking writes."""
    op.execute("ALTER TABLE sessions ADD COLUMN IF NOT EXISTS email VARCHAR(255)")
    create_index_concurrently(op, "idx_sessions_email", "sessions", ["email"])


def downgrade() -> None:
    """Drop the index (without blocking writes) and the column with its values."""
    drop_index_concurrently(op, "idx_sessions_email")
    op.execute("ALTER TABLE sessions DROP COLUMN IF EXISTS email")
