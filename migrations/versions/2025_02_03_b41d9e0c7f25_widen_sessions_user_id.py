"""Widen sessions.user_id to 500 characters

Schema v1.1.0, part 2. Widening a varchar needs no table rewrite. The downgrade narrows it back
to 255 and refuses, naming the count, when longer values exist instead of truncating them.

Revision ID: b41d9e0c7f25
Revises: 8f2b6c1d4e7a
Create Date: 2025-02-03 10:05:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from uaip_db.ops import refuse_if_longer_than

# revision identifiers, used by Alembic.
revision: str = "b41d9e0c7f25"
down_revision: str | Sequence[str] | None = "8f2b6c1d4e7a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """sessions.user_id: VARCHAR(255) -> VARCHAR(500)."""
    op.alter_column(
        "sessions",
        "user_id",
        type_=sa.String(500),
        existing_type=sa.String(255),
        existing_nullable=False,
    )


def downgrade() -> None:
    """sessions.user_id: VARCHAR(500) -> VARCHAR(255), only when every value fits."""
    refuse_if_longer_than(op, "sessions", "user_id", 255)
    op.alter_column(
        "sessions",
        "user_id",
        type_=sa.String(255),
        existing_type=sa.String(500),
        existing_nullable=False,
    )
