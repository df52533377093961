"""Making a backup: pg_dump, and a manifest read in the very snapshot pg_dump dumps.

The backup is written under a temporary name and appears under its final name only when its
manifest is written and fsynced (backups.folder); a failure, a full disk included, leaves nothing
behind. The password reaches pg_dump only through the environment, and never appears in a
manifest or a message.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uaip_db import process
from uaip_db.backups import folder as folders
from uaip_db.backups import progress, superuser
from uaip_db.backups.manifest import (
    CUSTOM_DUMP,
    DIRECTORY_DUMP,
    SCHEMA_FILE,
    WRITTEN,
    Backup,
    Compression,
    Manifest,
    describe_files,
    top_level_objects,
)
from uaip_db.catalog.snapshot import Snapshot, take_from
from uaip_db.errors import BackupError, PrivilegeMissing, SettingsError
from uaip_db.migrations import applied
from uaip_db.pg import (
    DatabaseLocale,
    catalog_connection,
    database_locale,
    database_oid,
    first_line,
    scrub,
    system_identifier,
)
from uaip_db.servers.binaries import client_program, major_of
from uaip_db.settings import DatabaseConfig

if TYPE_CHECKING:
    import psycopg

COMPRESSION_METHOD = re.compile(r"(gzip|lz4|zstd)(:\d{1,2})?|none")
FAST_COMPRESSION = "zstd:1"
FIRST_MAJOR_WITH_ZSTD_DUMPS = 16
# The session whose exported snapshot pg_dump reads, as pg_stat_activity names it.
SNAPSHOT_APPLICATION = "uaip-db backup"

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
    system_identifier: str | None = None
    database_oid: int | None = None
    locale: DatabaseLocale | None = None
    superuser_only: tuple[str, ...] = ()
    dumped_by_superuser: bool | None = None


@dataclass(frozen=True)
class DumpPlan:
    """How pg_dump writes: one job into a custom archive, or N jobs into a directory."""

    jobs: int = 1
    compression: Compression = None

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
    database: DatabaseConfig,
    out_dir: Path,
    *,
    jobs: int = 1,
    compression: Compression = None,
    state: str = WRITTEN,
    report: Callable[[str], None] | None = None,
    progress_seconds: float = progress.PROGRESS_SECONDS,
) -> Backup:
    """Dump `database` into a new backup under `out_dir` (see `new_backup`)."""
    with new_backup(
        database,
        out_dir,
        jobs=jobs,
        compression=compression,
        state=state,
        report=report,
        progress_seconds=progress_seconds,
    ) as made:
        return made


@contextlib.contextmanager
def new_backup(
    database: DatabaseConfig,
    out_dir: Path,
    *,
    jobs: int = 1,
    compression: Compression = None,
    state: str = WRITTEN,
    report: Callable[[str], None] | None = None,
    progress_seconds: float = progress.PROGRESS_SECONDS,
) -> Iterator[Backup]:
    """Dump `database` into a new folder under `out_dir`, with a manifest read in the same
    snapshot; the backup is held (never pruned by another run) until the block ends.

    jobs == 1 writes a custom-format archive; jobs > 1 a directory-format dump with N workers.
    `compression` is a gzip level (0-9) or pg_dump's `--compress` method (`zstd:1`, `lz4`,
    `gzip:6`, `none`); None: the fastest this pg_dump has (`fastest_compression`). `state` is
    recorded in the manifest: written (a restore check follows) or not verified. While pg_dump
    runs, `report` hears the bytes written so far every `progress_seconds`.
    """
    check_jobs(jobs)
    check_compression(compression)
    pg_dump = client_program("pg_dump")
    pg_dump_version = process.tool_version(pg_dump)
    if compression is None:
        compression = fastest_compression(pg_dump, pg_dump_version) or (1 if jobs > 1 else None)
    plan = DumpPlan(jobs, compression)
    out_dir = prepare_folder(Path(out_dir))
    try:
        for swept in folders.sweep_partials(out_dir):
            if report:
                report(f"  removed {swept.name}, an unfinished backup whose run was stopped")
    except OSError as error:
        raise write_failed(out_dir, error) from None
    partial: folders.Partial | None = None
    try:
        with catalog_connection(database, application_name=SNAPSHOT_APPLICATION) as conn:
            try:
                with snapshot_held(conn, database) as snapshot_id:
                    check_readable(conn, database)
                    revisions = applied.current_revisions_on(conn)
                    partial = folders.start_partial(out_dir, database.name, revisions)
                    # pg_dump reads the same snapshot; counting rows meanwhile uses the other
                    # core.
                    dumping = process.start_tool(
                        plan.args(pg_dump, partial.path, snapshot_id), [database]
                    )
                    written = progress.dump_line(partial.path)
                    with progress.reporting(report, written, progress_seconds):
                        try:
                            facts = read_facts(conn)
                        except BaseException:
                            # pg_dump's own failure would only be the echo of this one: the
                            # snapshot it imports ends with this aborted transaction.
                            process.stop_tool(dumping)
                            raise
                        process.finish_tool(
                            dumping, [database], what=f"back up {database.where()} (pg_dump)"
                        )
                # Named complete only once the snapshot's transaction has ended well: a backup
                # whose session was lost on the way is not one db.backups may list.
                made = write_backup(partial, database, facts, plan, pg_dump_version, state)
            except BaseException as error:
                if partial is not None:
                    partial.discard()
                if isinstance(error, OSError):
                    raise write_failed(out_dir, error) from None
                raise
        yield made
    finally:
        if partial is not None:
            partial.release()


@contextlib.contextmanager
def snapshot_held(conn: psycopg.Connection[Any], database: DatabaseConfig) -> Iterator[str]:
    """`exported_snapshot`, its session kept from idle-in-transaction timeouts (a database's or
    a role's setting would end it while it waits for pg_dump on purpose); the end of its
    transaction failing, or the session being lost at any point, is a BackupError."""
    import psycopg  # noqa: PLC0415

    conn.execute("SET idle_in_transaction_session_timeout = 0")
    finished = False
    try:
        with exported_snapshot(conn) as snapshot_id:
            yield snapshot_id
            finished = True
    except psycopg.OperationalError as error:
        # A lost session is the same failure at any point; a lock or statement timeout while
        # the connection lives is the caller's to word.
        if not finished and not conn.broken:
            raise
        raise BackupError(
            f"The session holding the snapshot of {database.where()} ended before the backup "
            f"was complete ({first_line(scrub(str(error), database))}); nothing was kept. Run "
            "the backup again."
        ) from None


def prepare_folder(out_dir: Path) -> Path:
    """`out_dir`, created (0700) when missing."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SettingsError(f"Backup folder {out_dir} is a file; point it at a folder.")
    if not out_dir.is_dir():
        try:
            out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(out_dir, 0o700)
        except OSError as error:
            raise SettingsError(
                f"Backup folder {out_dir} cannot be created "
                f"({folders.describe_os_error(error)}); point it at a folder you can write."
            ) from None
    return out_dir


def write_failed(out_dir: Path, error: OSError) -> BackupError:
    return BackupError(
        f"Could not write the backup into {out_dir}: {folders.describe_os_error(error)}; "
        "nothing was kept. Free some space or pick another folder."
    )


def check_compression(compression: Compression) -> None:
    if isinstance(compression, int) and not isinstance(compression, bool):
        if compression not in range(10):
            raise SettingsError(f"compression={compression!r} is not a gzip level; use 0 to 9.")
    elif compression is not None and not COMPRESSION_METHOD.fullmatch(str(compression)):
        raise SettingsError(
            f"compression={compression!r} is not known; use a gzip level 0 to 9, or zstd:LEVEL, "
            "lz4:LEVEL, gzip:LEVEL or none."
        )


def fastest_compression(pg_dump: str, version: str) -> str | None:
    """zstd at level 1 when this pg_dump has it (PostgreSQL 16 and later, built with zstd, as
    its pg_config says): on a million rows here it dumps about 2.5x faster than pg_dump's
    default gzip and writes a smaller archive. None where it may be missing."""
    if (major_of(version) or 0) < FIRST_MAJOR_WITH_ZSTD_DUMPS:
        return None
    pg_config = Path(pg_dump).with_name("pg_config")
    if not pg_config.is_file():
        return None
    try:
        configured = process.execute([str(pg_config), "--configure"], timeout=10).stdout
    except (OSError, process.TimeoutExpired):
        return None
    return FAST_COMPRESSION if "--with-zstd" in configured else None


def check_jobs(jobs: int) -> None:
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise SettingsError(f"jobs={jobs!r} is not a number of parallel jobs; use 1 or more.")


@contextlib.contextmanager
def exported_snapshot(conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A read-only repeatable-read transaction whose snapshot pg_dump imports (`--snapshot`)."""
    import psycopg  # noqa: PLC0415

    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    with conn.transaction():
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        yield str(row[0])


# Tables and sequences pg_dump reads (every schema but the system's; an extension's own are
# its to make) that the connected role may not SELECT from: (qualified name, role).
UNREADABLE_QUERY = """
SELECT pg_catalog.quote_ident(n.nspname) OPERATOR(pg_catalog.||) '.'
       OPERATOR(pg_catalog.||) pg_catalog.quote_ident(c.relname),
       pg_catalog.quote_ident(CURRENT_USER::pg_catalog.text)
  FROM pg_catalog.pg_class AS c
  JOIN pg_catalog.pg_namespace AS n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
 WHERE c.relkind OPERATOR(pg_catalog.=) ANY ('{r,p,S}'::pg_catalog."char"[])
   AND n.nspname OPERATOR(pg_catalog.<>) 'information_schema'
   AND NOT pg_catalog.starts_with(n.nspname::pg_catalog.text, 'pg_')
   AND NOT pg_catalog.has_table_privilege(c.oid, 'SELECT')
   AND NOT c.oid OPERATOR(pg_catalog.=) ANY (ARRAY(
       SELECT d.objid FROM pg_catalog.pg_depend AS d
        WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
          AND d.deptype OPERATOR(pg_catalog.=) 'e'))
 ORDER BY 1
"""
SHOWN_UNREADABLE = 3


def check_readable(conn: psycopg.Connection[Any], database: DatabaseConfig) -> None:
    """Refuse (PrivilegeMissing, before pg_dump starts) when the role may not read a table pg_dump
    would dump: pg_dump and the manifest's row counts would stop at it with a bare
    "permission denied for table x" (issue 24)."""
    rows = conn.execute(UNREADABLE_QUERY).fetchall()
    if not rows:
        return
    names = [str(name) for name, _ in rows]
    role = str(rows[0][1])
    shown = ", ".join(names[:SHOWN_UNREADABLE])
    more = f" and {len(names) - SHOWN_UNREADABLE} more" if len(names) > SHOWN_UNREADABLE else ""
    rest = " and likewise the rest" if more else ""
    raise PrivilegeMissing(
        f"Cannot back up {database.where()}: the role {role} may not read {len(names)} "
        f"table(s) a backup holds: {shown}{more}; nothing was written. Grant it as their owner "
        f"or a superuser (GRANT SELECT ON {shown} TO {role};{rest}) or, if they do not belong "
        "in this database, move them out of it."
    )


def read_facts(conn: psycopg.Connection[Any]) -> DatabaseFacts:
    row = conn.execute("SHOW server_version").fetchone()
    return DatabaseFacts(
        server_version=str(row[0]) if row else "unknown",
        revisions=applied.current_revisions_on(conn),
        row_counts=row_counts(conn),
        snapshot=take_from(conn),
        system_identifier=system_identifier(conn),
        database_oid=database_oid(conn),
        locale=database_locale(conn),
        superuser_only=superuser.superuser_only(conn),
        dumped_by_superuser=superuser.is_superuser(conn),
    )


def row_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Rows per table in `public`, bookkeeping tables (alembic_version) included."""
    from psycopg import sql  # noqa: PLC0415

    counts: dict[str, int] = {}
    for (name,) in conn.execute(TABLES_QUERY).fetchall():
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", name))
        row = conn.execute(query).fetchone()
        counts[str(name)] = int(row[0]) if row else 0
    return counts


def write_backup(
    partial: folders.Partial,
    database: DatabaseConfig,
    facts: DatabaseFacts,
    plan: DumpPlan,
    pg_dump_version: str,
    state: str,
) -> Backup:
    """schema.json, then the manifest, then the final name (backups.folder.complete)."""
    folders.write_file(partial.path / SCHEMA_FILE, facts.snapshot.to_json())
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
        files=tuple(describe_files(partial.path)),
        system_identifier=facts.system_identifier,
        database_oid=facts.database_oid,
        state=state,
        encoding=facts.locale.encoding if facts.locale else None,
        collate=facts.locale.collate if facts.locale else None,
        ctype=facts.locale.ctype if facts.locale else None,
        superuser_only=facts.superuser_only,
        dumped_by_superuser=facts.dumped_by_superuser,
    )
    return folders.complete(partial, lambda sequence: replace(manifest, sequence=sequence))
