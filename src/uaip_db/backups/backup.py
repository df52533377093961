"""Backups that are proven restorable: pg_dump with a manifest, pg_restore with verification.

A backup is a folder `<out_dir>/<dbname>-<UTC time>-<revision>` holding the dump (custom format
`dump.pgdump`, or directory format `dump/` for parallel jobs) and `manifest.json`: the size and
sha256 of every file, and what the database held when it was dumped (revision, schema
fingerprint, row counts), all read in the very snapshot pg_dump dumps. A restore checks the files
before it touches anything, restores in one transaction where pg_restore allows it, and compares
the result with the manifest. Folders are 0700 and files 0600; the password reaches pg_dump and
pg_restore only through the environment, and never appears in a manifest or a message.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from uaip_db import process
from uaip_db.catalog.snapshot import Snapshot, diff, take_from
from uaip_db.errors import BackupError, CheckFailed, SettingsError
from uaip_db.files import sha256_of, write_private
from uaip_db.migrations import runner
from uaip_db.pg import connection, scrub
from uaip_db.servers.local import find_bindir
from uaip_db.settings import DatabaseConfig

if TYPE_CHECKING:
    import psycopg

    from uaip_db.servers.scratch import ScratchServer

T = TypeVar("T")
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CUSTOM_DUMP = "dump.pgdump"
SCHEMA_FILE = "schema.json"
DIRECTORY_DUMP = "dump"
MAINTENANCE_DATABASE = "postgres"
SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
# Snapshot kinds that `pg_restore --clean` drops and recreates as a whole; an object of these
# kinds that the backup lacks would survive a restore over an existing database.
TOP_LEVEL_KINDS = (
    "extension",
    "schema",
    "table",
    "sequence",
    "view",
    "materialized view",
    "function",
    "procedure",
    "aggregate",
    "window function",
    "enum",
)
TOP_LEVEL_PREFIXES = tuple(f"{kind} " for kind in TOP_LEVEL_KINDS)
TABLES_QUERY = """
SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY 1
"""
USER_RELATIONS_QUERY = """
SELECT count(*) FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
"""


# --- the manifest ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What a backup holds: its files, and the database as it was dumped."""

    database: str
    source: str
    created_at: str
    format: str
    jobs: int
    server_version: str
    pg_dump_version: str
    revisions: tuple[str, ...]
    fingerprint: str
    objects: tuple[str, ...]
    row_counts: dict[str, int]
    files: tuple[FileEntry, ...]
    compression: int | None = None
    format_version: int = FORMAT_VERSION

    @property
    def dump(self) -> str:
        """The dump's path inside the backup folder."""
        return DIRECTORY_DUMP if self.format == "directory" else CUSTOM_DUMP

    @property
    def revision_label(self) -> str:
        return "+".join(self.revisions) or "base"

    def to_json(self) -> str:
        data = {
            "format_version": self.format_version,
            "database": self.database,
            "source": self.source,
            "created_at": self.created_at,
            "format": self.format,
            "jobs": self.jobs,
            "compression": self.compression,
            "dump": self.dump,
            "server_version": self.server_version,
            "pg_dump_version": self.pg_dump_version,
            "revisions": list(self.revisions),
            "fingerprint": self.fingerprint,
            "objects": list(self.objects),
            "row_counts": dict(sorted(self.row_counts.items())),
            "files": [vars(entry) for entry in self.files],
        }
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse a manifest; ValueError names what is wrong with it."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("it is not a JSON object")
        version = _field(data, "format_version", int)
        if version > FORMAT_VERSION:
            raise ValueError(f"format version {version} is newer than this uaip-db knows")
        fmt = _field(data, "format", str)
        if fmt not in ("custom", "directory"):
            raise ValueError(f"format {fmt!r} is unknown")
        return cls(
            database=_field(data, "database", str),
            source=_field(data, "source", str),
            created_at=_field(data, "created_at", str),
            format=fmt,
            jobs=_field(data, "jobs", int),
            server_version=_field(data, "server_version", str),
            pg_dump_version=_field(data, "pg_dump_version", str),
            revisions=tuple(_strings(data, "revisions")),
            fingerprint=_field(data, "fingerprint", str),
            objects=tuple(_strings(data, "objects")),
            row_counts=_row_counts(data),
            files=tuple(_file_entry(item) for item in _field(data, "files", list)),
            compression=_compression(data),
            format_version=version,
        )


def _field(data: dict[str, Any], key: str, kind: type[T]) -> T:
    value = data.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{key!r} is missing or not a {kind.__name__}")
    return value


def _compression(data: dict[str, Any]) -> int | None:
    value = data.get("compression")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ValueError("'compression' is not a number")
    return value


def _strings(data: dict[str, Any], key: str) -> list[str]:
    values = _field(data, key, list)
    if not all(isinstance(value, str) for value in values):
        raise ValueError(f"{key!r} is not a list of strings")
    return values


def _row_counts(data: dict[str, Any]) -> dict[str, int]:
    counts = _field(data, "row_counts", dict)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts.values()):
        raise ValueError("'row_counts' is not a table -> count object")
    return dict(counts)


def _file_entry(item: Any) -> FileEntry:
    if not isinstance(item, dict):
        raise ValueError("'files' holds something that is not a file entry")
    path = _field(item, "path", str)
    if Path(path).is_absolute() or ".." in Path(path).parts or path in ("", MANIFEST):
        raise ValueError(f"file entry {path!r} points outside the backup")
    return FileEntry(path, _field(item, "size", int), _field(item, "sha256", str))


@dataclass(frozen=True)
class Backup:
    path: Path
    manifest: Manifest

    def restore_command(self) -> str:
        """What a person runs to restore this backup."""
        return f"inv db.restore {shlex.quote(str(self.path))}"


@dataclass(frozen=True)
class RestoreReport:
    target: str
    seconds: float
    tables: int
    rows: int
    verified: bool
    revisions: tuple[str, ...] = ()
    created: bool = False


# --- making a backup ------------------------------------------------------------------------


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


def top_level_objects(snapshot: Snapshot) -> tuple[str, ...]:
    return tuple(sorted(key for key in snapshot.objects if key.startswith(TOP_LEVEL_PREFIXES)))


def reserve_folder(out_dir: Path, database: str, revisions: tuple[str, ...]) -> Path:
    """Create `<dbname>-<UTC yyyymmddTHHMMSSZ>-<revision>` (with -2, -3... if taken), 0700."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    label = "+".join(revisions) or "base"
    base = f"{SAFE_NAME.sub('_', database)}-{stamp}-{SAFE_NAME.sub('_', label)}"
    attempt = 1
    while True:
        folder = out_dir / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            attempt += 1
            continue
        os.chmod(folder, 0o700)
        return folder


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


def describe_files(folder: Path) -> list[FileEntry]:
    """Size and sha256 of every file but the manifest, sorted; makes them owner-only on the way."""
    entries = []
    for path in files_in(folder):
        os.chmod(path, 0o600)
        relative = path.relative_to(folder).as_posix()
        entries.append(FileEntry(relative, path.stat().st_size, sha256_of(path)))
    for directory in (p for p in folder.rglob("*") if p.is_dir()):
        os.chmod(directory, 0o700)
    return sorted(entries, key=lambda entry: entry.path)


def files_in(folder: Path) -> list[Path]:
    """Everything in the backup folder that is not a folder, the manifest aside."""
    return sorted(
        path
        for path in folder.rglob("*")
        if (path.is_symlink() or not path.is_dir()) and path != folder / MANIFEST
    )


# --- checking a backup ----------------------------------------------------------------------


def backup_folder(path: Path | str) -> Path:
    """The backup folder for a folder or its manifest.json path."""
    given = Path(path)
    folder = given.parent if given.name == MANIFEST and given.is_file() else given
    if not folder.is_dir():
        raise SettingsError(f"No backup at {given}; check the path.")
    if not (folder / MANIFEST).is_file():
        raise SettingsError(
            f"No backup at {given}: it has no {MANIFEST} (an interrupted backup leaves none). "
            "Use another backup."
        )
    return folder


def read_manifest(path: Path | str) -> Manifest:
    """The manifest of a backup (folder or manifest.json path), without checking the files."""
    folder = backup_folder(path)
    try:
        return Manifest.from_json((folder / MANIFEST).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise damaged(folder, f"its {MANIFEST} cannot be read ({error})") from None


def check_files(path: Path | str) -> Manifest:
    """Every listed file is there with its size and sha256, and nothing was added."""
    folder = backup_folder(path)
    manifest = read_manifest(folder)
    for entry in manifest.files:  # sizes first: a truncated dump is refused without hashing
        check_size(folder, entry)
    for entry in manifest.files:
        actual = sha256_of(folder / entry.path)
        if actual != entry.sha256:
            raise damaged(
                folder,
                f"{entry.path} does not match its manifest "
                f"(sha256 {actual[:12]}..., expected {entry.sha256[:12]}...)",
            )
    listed = {entry.path for entry in manifest.files}
    for extra in files_in(folder):
        relative = extra.relative_to(folder).as_posix()
        if relative not in listed and relative != f".{MANIFEST}.tmp":
            raise damaged(folder, f"{relative} is not in its manifest")
    if SCHEMA_FILE not in listed or saved_schema(folder).digest() != manifest.fingerprint:
        raise damaged(folder, f"{SCHEMA_FILE} does not match the manifest's schema fingerprint")
    return manifest


def saved_schema(folder: Path) -> Snapshot:
    """The schema snapshot taken with the dump (checked against the manifest by check_files)."""
    try:
        return Snapshot.from_json((folder / SCHEMA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise damaged(folder, f"{SCHEMA_FILE} cannot be read ({error})") from None


def check_size(folder: Path, entry: FileEntry) -> None:
    target = folder / entry.path
    if target.is_symlink() or not target.is_file():
        raise damaged(folder, f"{entry.path} is missing")
    size = target.stat().st_size
    if size != entry.size:
        raise damaged(
            folder,
            f"{entry.path} does not match its manifest (size {size} bytes, expected {entry.size})",
        )


def damaged(folder: Path, what: str) -> CheckFailed:
    return CheckFailed(f"Backup {folder} is damaged: {what}. Use another backup.")


# --- restoring ------------------------------------------------------------------------------


def restore_backup(
    path: Path | str,
    target: DatabaseConfig,
    *,
    server_admin: DatabaseConfig | None = None,
    into_existing: bool = False,
    jobs: int = 1,
) -> RestoreReport:
    """Restore a checked backup into `target` and prove the result matches its manifest.

    By default `target` must not exist (or be empty); it is created, and dropped again if
    anything fails. With `into_existing` its contents are replaced in one transaction, so a
    failure leaves it as it was.
    """
    started = time.monotonic()
    check_jobs(jobs)
    manifest = check_files(path)
    folder = backup_folder(path)
    if into_existing and jobs > 1:
        raise SettingsError(
            "A restore into an existing database runs in one transaction so a failure rolls "
            "back, and pg_restore cannot combine that with parallel jobs; use jobs=1."
        )
    admin = (server_admin or target).with_database(MAINTENANCE_DATABASE)
    relations = existing_relations(admin, target)
    replace = plan_restore(folder, manifest, target, relations, into_existing, jobs)
    created = relations is None
    if created:
        create_database(admin, target)
    try:
        run_restore(folder, manifest, target, replace=replace, jobs=jobs, created=created)
        return verified_report(folder, manifest, target, started, created)
    except BaseException:
        if created:
            with contextlib.suppress(Exception):
                drop_database(admin, target.name)
        raise


def plan_restore(
    folder: Path,
    manifest: Manifest,
    target: DatabaseConfig,
    relations: int | None,
    into_existing: bool,
    jobs: int,
) -> bool:
    """Whether the restore replaces existing objects; refuses what cannot be undone."""
    if relations is None:
        return False
    if jobs > 1:
        raise SettingsError(
            f"The {target.where()} already exists; a parallel restore only goes into a "
            "database it creates (so a failure can be undone by dropping it). Use jobs=1."
        )
    if relations == 0:
        return False
    if not into_existing:
        raise CheckFailed(
            f"The {target.where()} already exists and holds {relations} tables, views or "
            "sequences; restore under a new name, or replace its contents with --into-existing."
        )
    refuse_leftovers(manifest, target)
    return True


def existing_relations(admin: DatabaseConfig, target: DatabaseConfig) -> int | None:
    """None when `target` does not exist, else how many user relations it holds."""
    with connection(admin) as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (target.name,)
        ).fetchone()
    if not found:
        return None
    with connection(target) as conn:
        row = conn.execute(USER_RELATIONS_QUERY).fetchone()
    return int(row[0]) if row else 0


def refuse_leftovers(manifest: Manifest, target: DatabaseConfig) -> None:
    """Objects only the target has would survive `--clean`: refuse before touching anything."""
    with connection(target) as conn:
        current = take_from(conn)
    backup_objects = set(manifest.objects)
    backup_tables = {key[len("table ") :] for key in manifest.objects if key.startswith("table ")}
    leftovers = []
    for key in top_level_objects(current):
        owned_by = str(current.objects[key].get("owned_by", ""))
        if key in backup_objects or owned_by.split(".", 1)[0] in backup_tables:
            continue
        leftovers.append(key)
    if leftovers:
        raise CheckFailed(
            f"The {target.where()} has objects the backup does not ({first_few(leftovers)}); "
            "a restore over them would leave them behind. Drop them first, or restore under a "
            "new name."
        )


def first_few(items: list[str], separator: str = ", ", limit: int = 5) -> str:
    shown = separator.join(items[:limit])
    return shown + (f"{separator}and {len(items) - limit} more" if len(items) > limit else "")


def create_database(admin: DatabaseConfig, target: DatabaseConfig) -> None:
    from psycopg import errors, sql

    statement = sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(
        sql.Identifier(target.name), sql.Identifier(target.user)
    )
    with connection(admin) as conn:
        try:
            conn.execute(statement)
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


def drop_database(admin: DatabaseConfig, name: str) -> None:
    from psycopg import sql

    with connection(admin) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def run_restore(
    folder: Path,
    manifest: Manifest,
    target: DatabaseConfig,
    *,
    replace: bool,
    jobs: int,
    created: bool,
) -> None:
    args = [
        process.tool("pg_restore", find_bindir()),
        "--no-owner",
        "--exit-on-error",
        "--no-password",
    ]
    args.append(f"--dbname={conninfo_dbname(target.name)}")
    if replace:
        args += ["--clean", "--if-exists"]
    args += [f"--jobs={jobs}"] if jobs > 1 else ["--single-transaction"]
    args.append(str(folder / manifest.dump))
    try:
        process.run_tool(args, [target], what=f"restore {folder.name} into {target.where()}")
    except BackupError as error:
        outcome = "The new database is dropped again" if created else "The database is as it was"
        raise BackupError(f"{error}\n{outcome}; fix the cause and restore again.") from None


def conninfo_dbname(name: str) -> str:
    """`dbname='...'` for pg_restore --dbname: a name with `=` is never read as a conninfo."""
    return "dbname='" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def verified_report(
    folder: Path, manifest: Manifest, target: DatabaseConfig, started: float, created: bool
) -> RestoreReport:
    with connection(target) as conn:
        revisions = runner.current_revisions_on(conn)
        counts = row_counts(conn)
        restored = take_from(conn)
    schema_problems = compare_schemas(saved_schema(folder), restored)
    problems = differences(manifest, revisions, counts) + schema_problems
    if problems:
        raise CheckFailed(
            f"The restore of {folder.name} into {target.where()} does not match its manifest: "
            f"{first_few(problems, '; ')}.\n"
            + ("The new database is dropped again" if created else "The restored contents stay")
            + "; use another backup."
        )
    return RestoreReport(
        target=target.display_url(),
        seconds=round(time.monotonic() - started, 3),
        tables=len(counts),
        rows=sum(counts.values()),
        verified=True,
        revisions=revisions,
        created=created,
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


# --- keeping backups ------------------------------------------------------------------------


def list_backups(out_dir: Path, database_name: str) -> list[Path]:
    """Backups of `database_name` in `out_dir` (folders whose manifest names it), newest first."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found: list[tuple[str, str, Path]] = []
    for child in out_dir.iterdir():
        summary = manifest_summary(child)
        if summary is not None and summary[0] == database_name:
            found.append((summary[1], child.name, child))
    return [path for *_, path in sorted(found, reverse=True)]


def manifest_summary(folder: Path) -> tuple[str, str] | None:
    """(database, created_at) from a folder's manifest, or None when it is not a backup."""
    if folder.is_symlink() or not folder.is_dir():
        return None
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    database, created_at = data.get("database"), data.get("created_at")
    if isinstance(database, str) and isinstance(created_at, str):
        return database, created_at
    return None


def prune(out_dir: Path, database_name: str, keep: int) -> list[Path]:
    """Remove backups of `database_name` beyond the newest `keep`; the removed folders."""
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise SettingsError(
            f"keep={keep!r}: prune keeps at least the newest backup; use 1 or more."
        )
    removed = list_backups(out_dir, database_name)[keep:]
    for folder in removed:
        shutil.rmtree(folder)
    return removed


# --- proof ----------------------------------------------------------------------------------


def verify_restorable(
    backup: Backup | Path | str, server: ScratchServer, *, jobs: int = 1
) -> RestoreReport:
    """Restore into a throwaway database on `server`, verify it against the manifest, drop it."""
    path = backup.path if isinstance(backup, Backup) else Path(backup)
    name = f"uaip_verify_{secrets.token_hex(4)}"
    try:
        return restore_backup(path, server.config_for(name), server_admin=server.admin, jobs=jobs)
    finally:
        server.drop_database(name)
