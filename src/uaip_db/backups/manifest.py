"""A backup folder and its manifest: what a backup holds, and whether its files are intact.

A backup is a folder `<out_dir>/<dbname>-<UTC time>-<revision>` holding the dump (custom format
`dump.pgdump`, or directory format `dump/` for parallel jobs), `schema.json` and `manifest.json`:
the size and sha256 of every file, what the database held when it was dumped (revision, schema
fingerprint, row counts), which database it was (the server's system identifier, the database's
name and oid), its place in the folder's creation order, and its state (written, verified, not
verified). Folders are 0700 and files 0600; no password is ever written. A folder whose name
starts with `.partial-` is a backup still being written (backups.folder): it is never restored.

`scripts/backup` (POSIX shell, libpq's client tools only) writes the same manifest without what
only this library can take: no `schema.json`, its fingerprint (`null`) and the top-level objects
(`null`). Such a backup is still checked for everything it carries (every file's size and sha256,
the revision, the row counts); one that lists `schema.json` must carry its fingerprint.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from uaip_db.catalog.queries import OTHER_KINDS
from uaip_db.catalog.snapshot import Snapshot
from uaip_db.errors import CheckFailed, SettingsError
from uaip_db.files import sha256_of
from uaip_db.pg import DatabaseLocale

T = TypeVar("T")
# pg_dump --compress: a gzip level (0-9), or a method with an optional level (16 and later).
Compression = int | str | None
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CUSTOM_DUMP = "dump.pgdump"
SCHEMA_FILE = "schema.json"
DIRECTORY_DUMP = "dump"
PARTIAL_PREFIX = ".partial-"
# A backup's state: written (complete; its restore check has not finished), verified (restored
# and checked on a throwaway database), not verified (made with --no-verify), verify failed, or
# unchecked (scripts/backup, which runs no restore check).
WRITTEN = "written"
VERIFIED = "verified"
NOT_VERIFIED = "not verified"
VERIFY_FAILED = "verify failed"
UNCHECKED = "unchecked"
STATE_PHRASES = {
    WRITTEN: "not verified (its restore check did not finish)",
    VERIFIED: "verified (restored and checked on a throwaway database)",
    NOT_VERIFIED: "not verified (made with --no-verify)",
    UNCHECKED: "not verified (made by scripts/backup, which runs no restore check)",
    VERIFY_FAILED: "not restorable (its restore check failed)",
}
# Snapshot kinds that `pg_restore --clean` drops and recreates as a whole; an object of these
# kinds that the backup lacks would survive a restore over an existing database.
TOP_LEVEL_KINDS = frozenset(
    {
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
        "domain",
        "composite type",
        "range type",
        "event trigger",
        *OTHER_KINDS,
    }
)


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
    # "" (null in the file): no schema was recorded (scripts/backup); see `records_schema`.
    fingerprint: str
    # None: the top-level objects were not recorded (scripts/backup).
    objects: tuple[str, ...] | None
    row_counts: dict[str, int]
    files: tuple[FileEntry, ...]
    compression: Compression = None
    format_version: int = FORMAT_VERSION
    # Older manifests lack these: None means unknown.
    system_identifier: str | None = None
    database_oid: int | None = None
    state: str | None = None
    sequence: int | None = None
    # The source database's encoding, collation and ctype, which a restore gives its target.
    encoding: str | None = None
    collate: str | None = None
    ctype: str | None = None
    # What only a superuser can restore (backups.superuser), and whether the dumping role was
    # one; None: not recorded (an older uaip-db, scripts/backup).
    superuser_only: tuple[str, ...] | None = None
    dumped_by_superuser: bool | None = None

    @property
    def locale(self) -> DatabaseLocale | None:
        if self.encoding is None or self.collate is None or self.ctype is None:
            return None
        return DatabaseLocale(self.encoding, self.collate, self.ctype)

    @property
    def records_schema(self) -> bool:
        """Whether the backup carries its schema (schema.json and its fingerprint)."""
        return bool(self.fingerprint)

    @property
    def identity(self) -> Identity:
        return Identity(self.system_identifier, self.database, self.database_oid)

    @property
    def total_bytes(self) -> int:
        """The size of the backup's files, as written."""
        return sum(entry.size for entry in self.files)

    def with_state(self, state: str) -> Manifest:
        return replace(self, state=state)

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
            "fingerprint": self.fingerprint or None,
            "objects": None if self.objects is None else list(self.objects),
            "row_counts": dict(sorted(self.row_counts.items())),
            "files": [vars(entry) for entry in self.files],
            "system_identifier": self.system_identifier,
            "database_oid": self.database_oid,
            "state": self.state,
            "sequence": self.sequence,
            "encoding": self.encoding,
            "collate": self.collate,
            "ctype": self.ctype,
            "superuser_only": None if self.superuser_only is None else list(self.superuser_only),
            "dumped_by_superuser": self.dumped_by_superuser,
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
            fingerprint=_optional(data, "fingerprint", str) or "",
            objects=None if data.get("objects") is None else tuple(_strings(data, "objects")),
            row_counts=_row_counts(data),
            files=tuple(_file_entry(item) for item in _field(data, "files", list)),
            compression=_compression(data),
            format_version=version,
            system_identifier=_optional(data, "system_identifier", str),
            database_oid=_optional(data, "database_oid", int),
            state=_optional(data, "state", str),
            sequence=_optional(data, "sequence", int),
            encoding=_optional(data, "encoding", str),
            collate=_optional(data, "collate", str),
            ctype=_optional(data, "ctype", str),
            superuser_only=(
                None
                if data.get("superuser_only") is None
                else tuple(_strings(data, "superuser_only"))
            ),
            dumped_by_superuser=_optional_flag(data, "dumped_by_superuser"),
        )


def _field(data: dict[str, Any], key: str, kind: type[T]) -> T:
    value = data.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{key!r} is missing or not a {kind.__name__}")
    return value


def _compression(data: dict[str, Any]) -> Compression:
    value = data.get("compression")
    if value is None or (isinstance(value, int | str) and not isinstance(value, bool)):
        return value
    raise ValueError("'compression' is neither a gzip level nor a method")


def _optional(data: dict[str, Any], key: str, kind: type[T]) -> T | None:
    """A field older manifests may lack (None: unknown); present, it must have its type."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{key!r} is not a {'number' if kind is int else kind.__name__}")
    return value


def _optional_flag(data: dict[str, Any], key: str) -> bool | None:
    value = data.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise ValueError(f"{key!r} is neither true nor false")


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
class Identity:
    """Which database a backup is of: the server (system identifier), the name and the oid."""

    system_identifier: str | None
    database: str
    database_oid: int | None

    @property
    def known(self) -> bool:
        return self.system_identifier is not None and self.database_oid is not None

    def same_as(self, other: Identity) -> bool:
        """Both known and equal: an unknown identity is never taken for any other."""
        return self.known and other.known and self == other


def describe_state(state: str | None) -> str:
    """Whether a backup was verified, in words."""
    if state is None:
        return "not known to be verified (its manifest is from an older uaip-db)"
    return STATE_PHRASES.get(state, f"in state {state!r}, unknown to this uaip-db")


@dataclass(frozen=True)
class Backup:
    path: Path
    manifest: Manifest

    def restore_command(self) -> str:
        """What a person runs to restore this backup."""
        return f"inv db.restore {shlex.quote(str(self.path))}"


def top_level_objects(snapshot: Snapshot) -> tuple[str, ...]:
    return tuple(sorted(str(key) for key in snapshot.object_keys() if key.kind in TOP_LEVEL_KINDS))


# --- the backup folder ---------------------------------------------------------------------


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
    if folder.name.startswith(PARTIAL_PREFIX):
        raise SettingsError(
            f"{given} is an unfinished backup (still being written, or its run was stopped); "
            "use a complete one."
        )
    if not folder.is_dir():
        raise SettingsError(f"No backup at {given}; check the path.")
    if not (folder / MANIFEST).is_file():
        raise SettingsError(
            f"No backup at {given}: it has no {MANIFEST} (an interrupted backup leaves none). "
            "Use another backup."
        )
    return folder


class UnreadableManifest(ValueError):
    """A backup's manifest.json cannot be read: what is wrong, as `db.restore` (through
    `damaged`) and `db.backups` both say it: `its manifest.json cannot be read (...)`."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"its {MANIFEST} cannot be read ({reason})")


def parse_manifest(folder: Path) -> Manifest:
    """The manifest in a backup folder, as written (its files unchecked); UnreadableManifest
    when it is not valid UTF-8 JSON of a manifest this uaip-db knows."""
    try:
        return Manifest.from_json((folder / MANIFEST).read_text(encoding="utf-8"))
    except ValueError as error:  # UnicodeDecodeError and json's errors are ValueErrors
        raise UnreadableManifest(str(error)) from None


def read_manifest(path: Path | str) -> Manifest:
    """The manifest of a backup (folder or manifest.json path), without checking the files."""
    folder = backup_folder(path)
    try:
        return parse_manifest(folder)
    except UnreadableManifest as error:
        raise damaged(folder, str(error)) from None


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
    if not manifest.records_schema and SCHEMA_FILE not in listed:
        return manifest  # scripts/backup: sizes, hashes, and later revision and rows are checked
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
