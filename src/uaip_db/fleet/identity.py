"""Which database each target reaches: two targets naming one database (127.0.0.1 and localhost,
a pooler's port and the server's own) are refused before anything is changed.

A database is its server's system identifier (`pg_control_system()`, when the role may read it),
the server's start time (a standby, or a server started from a copy of a data directory, shares
the identifier but was started on its own), and the database's oid and name. One query per
target, on its own connection, in threads; a target that cannot be reached is left to the
command itself to report.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from uaip_db.errors import UaipDbError, UsageError
from uaip_db.fleet.targets import Target
from uaip_db.pg import connection, system_identifier
from uaip_db.settings import DatabaseConfig

Identity = tuple[str, str, int, str]


def identity(database: DatabaseConfig) -> Identity | None:
    """(system identifier, server start time, database oid, database name), or None when the
    target cannot be reached or read."""
    import psycopg  # noqa: PLC0415

    try:
        with connection(database) as conn:
            row = conn.execute(
                "SELECT pg_postmaster_start_time()::text, oid::bigint, datname "
                "FROM pg_database WHERE datname = current_database()"
            ).fetchone()
            server = system_identifier(conn) or ""
    except (UaipDbError, psycopg.Error):
        return None
    if row is None:
        return None
    return (server, str(row[0]), int(row[1]), str(row[2]))


def refuse_duplicates(
    targets: Sequence[tuple[Target, DatabaseConfig]], workers: int, path: object
) -> None:
    """UsageError (exit 2) naming the first two targets that reach the same database."""
    if len(targets) < 2:
        return
    with ThreadPoolExecutor(
        max_workers=min(len(targets), max(workers, 8)), thread_name_prefix="fleet-identity"
    ) as executor:
        found = list(executor.map(identity, [config for _target, config in targets]))
    seen: dict[Identity, Target] = {}
    for (target, config), key in zip(targets, found, strict=True):
        if key is None:
            continue
        first = seen.setdefault(key, target)
        if first is not target:
            raise UsageError(
                f"Targets {first.name!r} (line {first.line}) and {target.name!r} (line "
                f"{target.line}) of {path} reach the same database ({config.name} on one server); "
                "remove one of them."
            )
