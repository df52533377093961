"""Which revisions a database records (Alembic's version table), read with one query."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uaip_db.catalog.trust import VERSION_TABLE
from uaip_db.pg import reading
from uaip_db.settings import DatabaseConfig

if TYPE_CHECKING:
    import psycopg


def current_revisions(database: DatabaseConfig) -> tuple[str, ...]:
    """The revisions recorded in the database (empty at base), read with one query."""
    with reading(database) as conn:
        return current_revisions_on(conn)


def current_revisions_on(conn: psycopg.Connection[Any]) -> tuple[str, ...]:
    # Qualified, so that it reads the same on a catalog connection (search_path pg_catalog) and
    # on the migration connection, and nothing resolves outside pg_catalog (issue 24).
    row = conn.execute(
        "SELECT pg_catalog.to_regclass(%s) IS NOT NULL", (f"public.{VERSION_TABLE}",)
    ).fetchone()
    if not row or not row[0]:
        return ()
    rows = conn.execute(f"SELECT version_num FROM public.{VERSION_TABLE} ORDER BY 1").fetchall()
    return tuple(r[0] for r in rows)
