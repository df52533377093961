"""Making a backup: pg_dump, and a manifest read in the very snapshot pg_dump dumps.

The password reaches pg_dump only through the environment, and never appears in a manifest or
a message.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uaip_db import process
from uaip_db.backups.manifest import (
    CUSTOM_DUMP,
    DIRECTORY_DUMP,
    MANIFEST,
    SCHEMA_FILE,
    Backup,
    Manifest,
    describe_files,
    reserve_folder,
    top_level_objects,
)
from uaip_db.catalog.snapshot import Snapshot, take_from
from uaip_db.errors import SettingsError
from uaip_db.files import write_private
from uaip_db.migrations import runner
from uaip_db.pg import connection
from uaip_db.servers.local import find_bindir
from uaip_db.settings import DatabaseConfig

if TYPE_CHECKING:
    import psycopg

TABLES_QUERY = """
SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY 1
"""


@dataclass(frozen=True)
class DatabaseFacts:
    server_version: str
    revisions: tuple[str, ...]
    row_counts: dict[str, int]
    snapshot: Snapshot


@dataclass(frozen=True)
class DumpPlan:
    """How pg_dump writes: one job into a custom archive, or N jobs into a directory."""

    jobs: int = 1
    compression: int | None = None

    @property
    def format(self) -> str:
        return "directory" if self.jobs > 1 else "custom"

    def args(self, program: str, folder: Path, snapshot_id: str) -> list[str]:
        args = [program, "--no-password", f"--snapshot={snapshot_id}"]
        if self.compression is not None:
            args.append(f"--compress={self.compression}")
        if self.format == "directory":
            return [
                *args,
                "--format=directory",
                f"--jobs={self.jobs}",
                f"--file={folder / DIRECTORY_DUMP}",
            ]
        return [*args, "--format=custom", f"--file={folder / CUSTOM_DUMP}"]


def create_backup(
    database: DatabaseConfig, out_dir: Path, *, jobs: int = 1, compression: int | None = None
) -> Backup:
    """Dump `database` into a new folder under `out_dir`, with a manifest read in the same snapshot.

    jobs == 1 writes a custom-format archive; jobs > 1 a directory-format dump with N workers.
    `compression` is pg_dump's gzip level (0-9; None: pg_dump's default).
    """
    check_jobs(jobs)
    if compression is not None and compression not in range(10):
        raise SettingsError(f"compression={compression!r} is not a gzip level; use 0 to 9.")
    plan = DumpPlan(jobs, compression)
    pg_dump = process.tool("pg_dump", find_bindir())
    pg_dump_version = process.tool_version(pg_dump)
    out_dir = Path(out_dir)
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with connection(database) as conn, exported_snapshot(conn) as snapshot_id:
        revisions = runner.current_revisions_on(conn)
        folder = reserve_folder(out_dir, database.name, revisions)
        try:
            # pg_dump reads the same snapshot; counting rows meanwhile uses the other core.
            dumping = process.start_tool(plan.args(pg_dump, folder, snapshot_id), [database])
            try:
                facts = read_facts(conn)
            finally:
                process.finish_tool(
                    dumping, [database], what=f"back up {database.where()} (pg_dump)"
                )
            manifest = write_manifest(folder, database, facts, plan, pg_dump_version)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    return Backup(folder, manifest)


def check_jobs(jobs: int) -> None:
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise SettingsError(f"jobs={jobs!r} is not a number of parallel jobs; use 1 or more.")


@contextlib.contextmanager
def exported_snapshot(conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A read-only repeatable-read transaction whose snapshot pg_dump imports (`--snapshot`)."""
    import psycopg

    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    with conn.transaction():
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        yield str(row[0])


def read_facts(conn: psycopg.Connection[Any]) -> DatabaseFacts:
    row = conn.execute("SHOW server_version").fetchone()
    return DatabaseFacts(
        server_version=str(row[0]) if row else "unknown",
        revisions=runner.current_revisions_on(conn),
        row_counts=row_counts(conn),
        snapshot=take_from(conn),
    )


def row_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Rows per table in `public`, bookkeeping tables (alembic_version) included."""
    from psycopg import sql

    counts: dict[str, int] = {}
    for (name,) in conn.execute(TABLES_QUERY).fetchall():
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", name))
        row = conn.execute(query).fetchone()
        counts[str(name)] = int(row[0]) if row else 0
    return counts


def write_manifest(
    folder: Path,
    database: DatabaseConfig,
    facts: DatabaseFacts,
    plan: DumpPlan,
    pg_dump_version: str,
) -> Manifest:
    write_private(folder / SCHEMA_FILE, facts.snapshot.to_json())
    manifest = Manifest(
        database=database.name,
        source=database.display_url(),
        created_at=datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        format=plan.format,
        jobs=plan.jobs,
        compression=plan.compression,
        server_version=facts.server_version,
        pg_dump_version=pg_dump_version,
        revisions=facts.revisions,
        fingerprint=facts.snapshot.digest(),
        objects=top_level_objects(facts.snapshot),
        row_counts=facts.row_counts,
        files=tuple(describe_files(folder)),
    )
    write_private(folder / MANIFEST, manifest.to_json())
    return manifest
