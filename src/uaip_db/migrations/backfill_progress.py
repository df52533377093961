"""The bookkeeping table of batched backfills: where each one is, so a killed run resumes.

Owned here, apart from the backfill itself, because the runner clears finished records at the
end of each revision (in the transaction that moves the version row) and the backfill needs the
runner's settings: neither imports the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

PROGRESS_TABLE = "uaip_db_backfill_progress"

CREATE_PROGRESS_TABLE = f"""CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (
    name        text PRIMARY KEY,
    table_name  text NOT NULL,
    last_key    text[],
    rows_done   bigint NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    definition  text
)"""
# Records made before the definition was kept get the column (NULL: unknown).
ADD_DEFINITION = f"ALTER TABLE {PROGRESS_TABLE} ADD COLUMN IF NOT EXISTS definition text"


def forget_finished(conn: psycopg.Connection[Any]) -> None:
    """Drop the records of finished backfills, in the revision's last transaction: a revision
    that fails after its backfill keeps the record (its retry skips the backfill); once the
    version row moves, a later run of the same revision (after a downgrade) backfills again."""
    row = conn.execute(
        "SELECT pg_catalog.to_regclass(%s) IS NOT NULL", (f"public.{PROGRESS_TABLE}",)
    ).fetchone()
    if row and row[0]:
        conn.execute(f"DELETE FROM public.{PROGRESS_TABLE} WHERE finished_at IS NOT NULL")
