"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

"""
<%
    def quoted(value):
        return repr(value).replace("'", '"')
%>
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
# revision identifiers, used by Alembic.
revision: str = ${quoted(up_revision)}
down_revision: str | Sequence[str] | None = ${quoted(down_revision)}
branch_labels: str | Sequence[str] | None = ${quoted(branch_labels)}
depends_on: str | Sequence[str] | None = ${quoted(depends_on)}

# expand: the previous release of the application keeps working on the schema this leaves
# (additions, nullable or defaulted columns, wider types, new indexes, backfills); it may run
# before the new release is deployed. contract: only once every instance runs the new release
# (drops, renames, narrowing, NOT NULL). db.lint checks the statements against it.
phase = "expand"

# Say it when the downgrade drops data (db.downgrade then asks for --yes), e.g.
# destroys_data_on_downgrade = "sessions.nickname"
# or when there is deliberately no way back:
# irreversible = "why"


def upgrade() -> None:
    """Apply this change."""
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    """Undo exactly what upgrade() did."""
    ${downgrades if downgrades else "pass"}
