"""The migration lock: a session-level advisory lock, held on its own idle connection.

The holder's connection stays outside any transaction, and waiters poll `pg_try_advisory_lock`
in autocommit mode, so neither holds a snapshot: `CREATE INDEX CONCURRENTLY`, which waits for
every older snapshot, is never stalled by a runner queueing for the lock.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, LiteralString

from uaip_db.errors import MigrationLockHeld
from uaip_db.settings import LOCK_WAIT

if TYPE_CHECKING:
    import psycopg

LOCK_KEY = 0x5541_4950_4442  # "UAIPDB": the same key for every runner on the same database
DEFAULT_WAIT_SECONDS: float = LOCK_WAIT.default
POLL_SECONDS = 0.1


@contextmanager
def migration_lock(
    open_connection: Callable[[], psycopg.Connection[Any]],
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the lock for the body; `open_connection` returns a fresh connection of its own."""
    conn = open_connection()
    try:
        conn.autocommit = True
        keep_alive(conn)
        deadline = time.monotonic() + wait_seconds
        told = False
        while not _try_lock(conn):
            if time.monotonic() >= deadline:
                raise MigrationLockHeld(
                    f"Another migration holds the lock ({describe_holder(conn)}); waited "
                    f"{wait_seconds:g} s. Let it finish and run again, or wait longer "
                    "(--lock-wait, or UAIP_LOCK_WAIT for plain alembic)."
                )
            if on_wait is not None and not told:
                on_wait(f"Waiting for the migration lock held by {describe_holder(conn)}...")
                told = True
            time.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            if not conn.closed and not conn.broken:
                _execute(conn, "SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    finally:
        conn.close()


def keep_alive(conn: psycopg.Connection[Any]) -> None:
    """The lock lives as long as this idle session: a server or database `idle_session_timeout`
    must not end it while the migrations run on another connection (PostgreSQL 14+)."""
    import psycopg  # noqa: PLC0415

    # Older servers have no such timeout.
    with contextlib.suppress(psycopg.errors.UndefinedObject):
        conn.execute("SELECT set_config('idle_session_timeout', '0', false)")


def _execute(
    conn: psycopg.Connection[Any], query: LiteralString, params: tuple[object, ...]
) -> tuple[Any, ...] | None:
    return conn.execute(query, params).fetchone()


def _try_lock(conn: psycopg.Connection[Any]) -> bool:
    row = _execute(conn, "SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
    return bool(row and row[0])


def describe_holder(conn: psycopg.Connection[Any]) -> str:
    row = _execute(
        conn,
        """
        SELECT a.pid, coalesce(nullif(a.application_name, ''), 'unknown program'),
               coalesce(host(a.client_addr), 'local socket'),
               to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"')
        FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND ((l.classid::bigint << 32) | l.objid::bigint) = %s
        LIMIT 1
        """,
        (LOCK_KEY,),
    )
    if row is None:
        return "a process that has since let go"
    pid, program, client, since = row
    return f"pid {pid}, {program} from {client}, connected since {since}"
