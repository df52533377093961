"""Restoring a backup, and proving one restorable on a throwaway database.

A restore holds the backup (backups.folder: it is not pruned meanwhile), checks the files before
it touches anything, restores in one transaction where pg_restore allows it, and compares the
result with the manifest (revision, schema, row counts). It never restores into a system or
template database. Proving a backup restorable uses a throwaway database (backups.throwaway)
and records the outcome (verified, verify failed) in its manifest. The password reaches
pg_restore only through the environment, and never appears in a message.
"""

from __future__ import annotations

import contextlib
import datetime
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from uaip_db import pg, process
from uaip_db.backups import folder as folders
from uaip_db.backups import progress, superuser
from uaip_db.backups.dump import check_jobs, row_counts
from uaip_db.backups.manifest import (
    VERIFIED,
    VERIFY_FAILED,
    Backup,
    Manifest,
    backup_folder,
    check_files,
    saved_schema,
)
from uaip_db.backups.replace import drop_statements, leftovers, replace_with_drops
from uaip_db.backups.throwaway import VERIFY_PREFIX, throwaway_database
from uaip_db.catalog.snapshot import Snapshot, diff, take_from
from uaip_db.errors import (
    BackupError,
    CheckFailed,
    DiskFull,
    SettingsError,
    UaipDbError,
    UsageError,
)
from uaip_db.migrations import applied
from uaip_db.pg import connection, conninfo_dbname, first_line, scrub
from uaip_db.servers.binaries import client_program
from uaip_db.settings import DatabaseConfig
from uaip_db.text import first_few

if TYPE_CHECKING:
    from uaip_db.servers.scratch import ScratchServer

SYSTEM_DATABASES = ("postgres", "template0", "template1")
# `db.restore` without a target names the new database <source>_restored_<UTC time>[_N], in 63
# bytes (the source's name shortened, never the suffix); `db.clean` finds exactly those.
RESTORED_MARK = "_restored_"
RESTORED_NAME = re.compile(r"_restored_\d{14}(?:_\d+)?\Z")
USER_RELATIONS_QUERY = """
SELECT count(*) FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
"""


@dataclass(frozen=True)
class RestoreReport:
    target: str
    seconds: float
    tables: int
    rows: int
    verified: bool
    revisions: tuple[str, ...] = ()
    created: bool = False
    backup_state: str | None = None
    # False for a backup that records no schema (scripts/backup): revision and rows were checked.
    schema_checked: bool = True


# --- restoring ------------------------------------------------------------------------------


def restored_name(admin: DatabaseConfig, source: str) -> str:
    """A new database name for a restore of `source` that no database has yet: `<source>
    _restored_<UTC time>`, `..._2` when that is taken, each within 63 bytes."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d%H%M%S")
    with connection(admin.with_database(pg.MAINTENANCE_DATABASE)) as conn:
        number = 1
        while True:
            suffix = f"{RESTORED_MARK}{stamp}" + (f"_{number}" if number > 1 else "")
            name = pg.fitted_name(source, suffix)
            if not pg.database_exists(conn, name):
                return name
            number += 1


def is_restored_name(name: str) -> bool:
    """Whether `name` is one `restored_name` gives (what `db.clean` may drop)."""
    return RESTORED_NAME.search(name) is not None


def check_name_length(target: DatabaseConfig) -> None:
    """A name PostgreSQL would cut short names another database: refused."""
    size = len(target.name.encode())
    if size > pg.MAX_NAME_BYTES:
        raise UsageError(
            f"The database name {target.name!r} is {size} bytes; PostgreSQL keeps only "
            f"{pg.MAX_NAME_BYTES} (it would restore into a shortened name). Pick a shorter one."
        )


def restore_backup(
    path: Path | str,
    target: DatabaseConfig,
    *,
    server_admin: DatabaseConfig | None = None,
    into_existing: bool = False,
    jobs: int = 1,
    report: Callable[[str], None] | None = None,
    progress_seconds: float = progress.PROGRESS_SECONDS,
    checked: Manifest | None = None,
) -> RestoreReport:
    """Restore a checked backup into `target` and prove the result matches its manifest.

    By default `target` must not exist (or be empty); it is created, and dropped again if
    anything fails. With `into_existing` its contents are replaced in one transaction, so a
    failure leaves it as it was. While pg_restore runs, `report` hears how many tables it has
    loaded every `progress_seconds`. `checked` is what `check_files` returned for this backup
    while the caller holds it (`folders.holding`): its files are not hashed a second time.
    """
    started = time.monotonic()
    check_jobs(jobs)
    folder = backup_folder(path)
    with folders.holding(folder):
        manifest = checked if checked is not None else check_files(folder)
        if into_existing and jobs > 1:
            raise SettingsError(
                "A restore into an existing database runs in one transaction so a failure rolls "
                "back, and pg_restore cannot combine that with parallel jobs; use jobs=1."
            )
        admin = (server_admin or target).with_database(pg.MAINTENANCE_DATABASE)
        superuser.refuse_unless_superuser(admin, target, folder, manifest)
        relations = existing_relations(admin, target)
        clean, drops = plan_restore(folder, manifest, target, relations, into_existing, jobs)
        created = relations is None
        if created:
            create_database(admin, target, manifest.locale)
        try:
            run_restore(
                folder,
                manifest,
                target,
                replace=clean,
                drop_first=drops,
                jobs=jobs,
                created=created,
                report=report,
                progress_seconds=progress_seconds,
            )
            return verified_report(folder, manifest, target, started, created)
        except UaipDbError as error:
            if not created:
                raise
            raise type(error)(f"{error}\n{undone(admin, target, error)}") from None
        except BaseException:
            if created:
                drop_created(admin, target)
            raise


def drop_created(admin: DatabaseConfig, target: DatabaseConfig) -> str | None:
    """Drop the database a failed restore created; None when it is gone, else why not."""
    import psycopg  # noqa: PLC0415

    try:
        with connection(admin) as conn:
            pg.drop_database(conn, target.name)
    except (psycopg.Error, UaipDbError) as error:
        return first_line(scrub(str(error), admin))
    return None


def undone(admin: DatabaseConfig, target: DatabaseConfig, error: UaipDbError) -> str:
    """What became of the database a failed restore created (said only once the drop is
    done), and what to do."""
    if isinstance(error, DiskFull):
        advice = "free space on that server and restore again"
    elif isinstance(error, CheckFailed):
        advice = "use another backup"
    else:
        advice = "fix the cause and restore again"
    problem = drop_created(admin, target)
    if problem is None:
        return f"The new database is dropped again; {advice}."
    return (
        f"The new database {target.name!r} could not be dropped ({problem}); {advice}, then "
        "drop it (inv db.clean)."
    )


def plan_restore(
    folder: Path,
    manifest: Manifest,
    target: DatabaseConfig,
    relations: int | None,
    into_existing: bool,
    jobs: int,
) -> tuple[bool, list[str]]:
    """Whether the restore replaces existing objects, and what it drops first (objects only the
    target has); refuses what cannot be undone."""
    if relations is None:
        return False, []
    if jobs > 1:
        raise SettingsError(
            f"The {target.where()} already exists; a parallel restore only goes into a "
            "database it creates (so a failure can be undone by dropping it). Use jobs=1."
        )
    if relations == 0:
        return False, []
    if not into_existing:
        raise CheckFailed(
            f"The {target.where()} already exists and holds {relations} tables, views or "
            "sequences; restore under a new name, or replace its contents (inv db.restore "
            "--yes; into_existing=True)."
        )
    return True, drop_statements(leftovers(manifest, target))


def existing_relations(admin: DatabaseConfig, target: DatabaseConfig) -> int | None:
    """None when `target` does not exist, else how many user relations it holds; a system or
    template database is refused before anything connects to it."""
    refuse_system_database(target)
    check_name_length(target)
    with connection(admin) as conn:
        flags = pg.database_flags(conn, target.name)
    if flags is None:
        return None
    if flags[0]:
        raise UsageError(
            f"Refusing to restore into the {target.where()}: it is a template database (new "
            "databases are copied from it). Restore into a new database (--target NEW_NAME)."
        )
    with connection(target) as conn:
        row = conn.execute(USER_RELATIONS_QUERY).fetchone()
    return int(row[0]) if row else 0


def refuse_system_database(target: DatabaseConfig) -> None:
    if target.name in SYSTEM_DATABASES:
        raise UsageError(
            f"Refusing to restore into the {target.where()}: it is a system database. "
            "Restore into a new database (--target NEW_NAME)."
        )


def create_database(
    admin: DatabaseConfig, target: DatabaseConfig, locale: pg.DatabaseLocale | None = None
) -> None:
    from psycopg import errors  # noqa: PLC0415

    with connection(admin) as conn:
        try:
            try:
                pg.create_database(
                    conn, target.name, owner=target.user, template="template0", locale=locale
                )
            except errors.InvalidParameterValue:
                if locale is None:
                    raise
                # This server lacks the source's collation: keep its encoding, which decides
                # what text the database can hold, with the C collation every server has.
                portable = pg.DatabaseLocale(locale.encoding, "C", "C")
                pg.create_database(
                    conn, target.name, owner=target.user, template="template0", locale=portable
                )
        except errors.DuplicateDatabase:
            raise CheckFailed(
                f"The {target.where()} was created by someone else meanwhile; "
                "restore under a new name."
            ) from None
        except errors.InsufficientPrivilege as error:
            raise SettingsError(
                f"{admin.user} may not create {target.name!r} ({scrub(str(error), admin)}); "
                "create it empty first, or give a server admin that may."
            ) from None
        except errors.DiskFull as error:
            raise DiskFull(
                f"Could not create {target.where()}: the server's disk is full "
                f"({first_line(scrub(str(error), admin))}); nothing was created."
            ) from None


def run_restore(
    folder: Path,
    manifest: Manifest,
    target: DatabaseConfig,
    *,
    replace: bool,
    jobs: int,
    created: bool,
    drop_first: list[str] | None = None,
    report: Callable[[str], None] | None = None,
    progress_seconds: float = progress.PROGRESS_SECONDS,
) -> None:
    if drop_first:
        replace_with_drops(folder, manifest, target, drop_first)
        return
    args = [
        client_program("pg_restore"),
        "--no-owner",
        "--exit-on-error",
        "--no-password",
    ]
    args.append(f"--dbname={conninfo_dbname(target.name)}")
    if replace:
        args += ["--clean", "--if-exists"]
    args += [f"--jobs={jobs}"] if jobs > 1 else ["--single-transaction"]
    args.append(str(folder / manifest.dump))
    what = f"restore {folder.name} into {target.where()}"
    try:
        if report is None:
            process.run_tool(args, [target], what=what)
        else:
            restore_reporting(
                args, target, len(manifest.row_counts), what, report, progress_seconds
            )
    except BackupError as error:
        if created:
            raise  # restore_backup drops the database, then says so
        raise type(error)(
            f"{error}\nThe database is as it was; fix the cause and restore again."
        ) from None


def restore_reporting(
    args: list[str],
    target: DatabaseConfig,
    tables: int,
    what: str,
    report: Callable[[str], None],
    progress_seconds: float,
) -> None:
    """pg_restore --verbose, its lines counted as they come: `report` hears the tables loaded."""
    restoring = process.start_tool([*args[:1], "--verbose", *args[1:]], [target])
    loaded = progress.RestoredTables(tables)
    try:
        with progress.reporting(report, loaded.describe, progress_seconds):
            assert restoring.stderr is not None
            for line in restoring.stderr:
                loaded.add(line.rstrip("\n"))
            restoring.wait()
    except BaseException:  # interrupted: pg_restore must not go on writing alone
        restoring.kill()
        restoring.wait()
        raise
    if restoring.returncode != 0:
        raise process.tool_error("\n".join(loaded.lines), [target], what=what)


# --- verifying ------------------------------------------------------------------------------


def verified_report(
    folder: Path, manifest: Manifest, target: DatabaseConfig, started: float, created: bool
) -> RestoreReport:
    with connection(target) as conn:
        revisions = applied.current_revisions_on(conn)
        counts = row_counts(conn)
        restored = take_from(conn)
    schema_problems = (
        compare_schemas(saved_schema(folder), restored) if manifest.records_schema else []
    )
    problems = differences(manifest, revisions, counts) + schema_problems
    if problems:
        raise CheckFailed(
            f"The restore of {folder.name} into {target.where()} does not match its manifest: "
            f"{first_few(problems, '; ')}."
            + ("" if created else "\nThe restored contents stay; use another backup.")
        )
    return RestoreReport(
        target=target.display_url(),
        seconds=round(time.monotonic() - started, 3),
        tables=len(counts),
        rows=sum(counts.values()),
        verified=True,
        revisions=revisions,
        created=created,
        backup_state=manifest.state,
        schema_checked=manifest.records_schema,
    )


def differences(
    manifest: Manifest, revisions: tuple[str, ...], counts: dict[str, int]
) -> list[str]:
    problems = []
    if revisions != manifest.revisions:
        problems.append(
            f"revision {'+'.join(revisions) or 'base'}, expected {manifest.revision_label}"
        )
    for table in sorted(manifest.row_counts.keys() | counts.keys()):
        expected, actual = manifest.row_counts.get(table), counts.get(table)
        if expected != actual:
            problems.append(
                f"table {table}: {'no' if actual is None else actual} rows, expected "
                f"{'none (not in the backup)' if expected is None else expected}"
            )
    return problems


def compare_schemas(saved: Snapshot, restored: Snapshot) -> list[str]:
    """Differences between the dumped and the restored schema."""
    return [f"schema fingerprint differs: {line}" for line in diff(saved, restored)]


def verify_restorable(
    backup: Backup | Path | str,
    server: ScratchServer,
    *,
    jobs: int = 1,
    report: Callable[[str], None] | None = None,
    progress_seconds: float = progress.PROGRESS_SECONDS,
) -> RestoreReport:
    """Restore into a throwaway database on `server`, verify it against the manifest, drop it;
    the backup's manifest records the outcome (verified, or verify failed)."""
    path = backup.path if isinstance(backup, Backup) else Path(backup)
    folder = backup_folder(path)
    with throwaway_database(server, VERIFY_PREFIX, report) as target:
        try:
            result = restore_backup(
                folder,
                target,
                server_admin=server.admin,
                jobs=jobs,
                report=report,
                progress_seconds=progress_seconds,
            )
        except DiskFull as error:
            # The check's own server failed, not the backup: its state stays written.
            raise check_disk_full(server, target, error) from None
        except (CheckFailed, BackupError):
            with contextlib.suppress(CheckFailed, BackupError):
                folders.record_state(folder, VERIFY_FAILED)
            raise
    folders.record_state(folder, VERIFIED)
    return replace(result, backup_state=VERIFIED)


def check_disk_full(server: ScratchServer, target: DatabaseConfig, error: DiskFull) -> DiskFull:
    """The restore check could not finish because its throwaway server's disk is full: the
    disk named, what became of the throwaway database (looked up, not assumed)."""
    line = str(error).splitlines()[0]
    cause = line.rsplit("ERROR: ", 1)[-1]  # the server's words, without pg_restore's preamble
    import psycopg  # noqa: PLC0415

    try:
        left = pg.database_exists(server.connection(), target.name)
    except (psycopg.Error, UaipDbError):  # a server that cannot answer: it may be left
        left = True
    leftover = (
        f"; its throwaway database {target.name} is left (inv db.clean drops it)" if left else ""
    )
    return DiskFull(
        f"The restore check could not finish: the throwaway server's disk ({server.disk()}) is "
        f"full ({cause}){leftover}.\nThe backup is not known to be bad: free space there, or set "
        "UAIP_SCRATCH_URL to a server with room, and prove it again (inv db.rehearse)."
    )
