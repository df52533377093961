"""Throwaway databases for restore checks and rehearsals, and the ones killed runs left behind.

Each is named `<prefix><pid>_<random>`. Before it is created, and for as long as it lives, its
run holds a session advisory lock keyed on that name, on its own connection to the server's
maintenance database. A run that is killed loses its connection and with it the lock, so the next
check or rehearsal on the same server drops every throwaway database whose lock it can take and
to which nobody is connected; the ones live runs use are never touched.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from uaip_db import pg
from uaip_db.settings import DatabaseConfig

if TYPE_CHECKING:
    import psycopg

    from uaip_db.servers.scratch import ScratchServer

VERIFY_PREFIX = "uaip_verify_"
REHEARSAL_PREFIX = "uaip_rehearsal_"
PREFIXES = (VERIFY_PREFIX, REHEARSAL_PREFIX)
# pg_advisory_lock(int, int) keys: a space apart from the migration lock's single bigint key.
LOCK_CLASS = 0x5541_4950  # "UAIP"
SESSIONS_QUERY = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"


@contextlib.contextmanager
def throwaway_database(
    server: ScratchServer, prefix: str, report: Callable[[str], None] | None = None
) -> Iterator[DatabaseConfig]:
    """A name for a throwaway database on `server`, held by this run; dropped at the end.

    Leftovers of killed runs are swept first. The caller creates the database (a restore does).
    """
    for name in sweep(server):
        if report:
            report(f"  dropped {name}, a throwaway database a stopped run left behind")
    name = f"{prefix}{os.getpid()}_{secrets.token_hex(3)}"
    with pg.connection(server.admin.with_database(pg.MAINTENANCE_DATABASE)) as holder:
        holder.execute("SELECT pg_advisory_lock(%s::int, hashtext(%s))", (LOCK_CLASS, name))
        try:
            yield server.config_for(name)
        except BaseException:
            # The failure says what went wrong; a failed drop (the database was never made, or
            # the server turned read-only) must not replace it. A later sweep drops a leftover.
            with contextlib.suppress(Exception):
                server.drop_database(name)
            raise
        server.drop_database(name)


def sweep(server: ScratchServer) -> list[str]:
    """Drop the throwaway databases whose run is gone; their names."""
    import psycopg  # noqa: PLC0415

    conn = server.connection()
    dropped = []
    for name in pg.databases_like(conn, [pg.like_pattern(prefix) for prefix in PREFIXES]):
        if not _try_lock(conn, name):
            continue  # its run is alive
        try:
            if _sessions(conn, name) == 0:
                pg.drop_database(conn, name)
                dropped.append(str(name))
        except psycopg.Error:
            continue  # not ours to drop (another role's), or gone meanwhile
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s::int, hashtext(%s))", (LOCK_CLASS, name))
    return dropped


def _try_lock(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute(
        "SELECT pg_try_advisory_lock(%s::int, hashtext(%s))", (LOCK_CLASS, name)
    ).fetchone()
    return bool(row and row[0])


def _sessions(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute(SESSIONS_QUERY, (name,)).fetchone()
    return int(row[0]) if row else 0
