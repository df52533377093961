"""The applied-migration ledger: which revision file (sha256) was applied, when, by whom, how long.

Rows are written by env.py inside each migration's own transaction, so the ledger and the
version row never disagree. `db.check` compares the recorded hashes with the files on disk to
catch a migration edited after it was applied.
"""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

from uaip_db import files

LEDGER_TABLE = "uaip_db_migration_ledger"
CREATE_LEDGER = f"""
CREATE TABLE IF NOT EXISTS public.{LEDGER_TABLE} (
    revision     VARCHAR(64) PRIMARY KEY,
    file_sha256  CHAR(64) NOT NULL,
    applied_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_by   TEXT NOT NULL,
    duration_ms  INTEGER,
    how          VARCHAR(10) NOT NULL
                 CHECK (how::text OPERATOR(pg_catalog.=) ANY ('{{upgrade,stamp}}'::text[])),
    phase        VARCHAR(10)
)
"""
# A ledger made before phases were recorded gets the column (NULL there: not recorded).
ADD_PHASE = f"ALTER TABLE public.{LEDGER_TABLE} ADD COLUMN IF NOT EXISTS phase VARCHAR(10)"


@dataclass(frozen=True)
class Entry:
    revision: str
    file_sha256: str
    applied_at: datetime
    applied_by: str
    duration_ms: int | None
    how: str
    phase: str | None = None  # expand or contract (migrations/phases.py); None before recorded


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def record(
    conn: psycopg.Connection[Any],
    revision: str,
    path: str | Path,
    how: str,
    duration_ms: int | None,
    phase: str | None = None,
) -> None:
    """Record `revision` as applied, inside the migration's own transaction, with its phase: an
    application that does not know the revision reads it from here."""
    conn.execute(CREATE_LEDGER)
    if has_phase_column(conn) is False:
        conn.execute(ADD_PHASE)
    conn.execute(
        # Every name qualified and every operator pg_catalog's (issue 24): this runs on the
        # migration connection, whose search_path holds public.
        f"INSERT INTO public.{LEDGER_TABLE} "
        "(revision, file_sha256, applied_by, duration_ms, how, phase) "
        "VALUES (%s, %s, %s::text OPERATOR(pg_catalog.||) ' as '::text "
        "OPERATOR(pg_catalog.||) CURRENT_USER::text, %s, %s, %s) "
        "ON CONFLICT (revision) DO UPDATE SET file_sha256 = EXCLUDED.file_sha256, "
        "applied_at = EXCLUDED.applied_at, applied_by = EXCLUDED.applied_by, "
        "duration_ms = EXCLUDED.duration_ms, how = EXCLUDED.how, phase = EXCLUDED.phase",
        (revision, files.sha256_of(path), who(), duration_ms, how, phase),
    )


def forget(conn: psycopg.Connection[Any], revisions: list[str]) -> None:
    """Drop the entries of reverted revisions, inside the migration's own transaction."""
    conn.execute(CREATE_LEDGER)
    conn.execute(
        f"DELETE FROM public.{LEDGER_TABLE} "
        "WHERE revision::text OPERATOR(pg_catalog.=) ANY(%s::text[])",
        (revisions,),
    )


def entries(conn: psycopg.Connection[Any]) -> dict[str, Entry]:
    """All entries; empty when there is no ledger yet."""
    exists = conn.execute(
        "SELECT pg_catalog.to_regclass(%s) IS NOT NULL", (f"public.{LEDGER_TABLE}",)
    ).fetchone()
    if not exists or not exists[0]:
        return {}
    # Through to_jsonb: a ledger made before the phase column reads as phase NULL.
    rows = conn.execute(
        "SELECT l.revision, l.file_sha256, l.applied_at, l.applied_by, l.duration_ms, l.how, "
        "pg_catalog.to_jsonb(l) OPERATOR(pg_catalog.->>) 'phase'::text "
        f"FROM public.{LEDGER_TABLE} AS l"
    ).fetchall()
    return {row[0]: Entry(*row) for row in rows}


def has_phase_column(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute "
        "WHERE attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(%s) "
        "AND attname OPERATOR(pg_catalog.=) 'phase'::pg_catalog.name AND NOT attisdropped)",
        (f"public.{LEDGER_TABLE}",),
    ).fetchone()
    return bool(row and row[0])
