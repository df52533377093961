"""The folder backups live in: a backup appears complete or not at all, and only backups of the
same database are pruned.

A backup is written into `.partial-<name>-<pid>-<random>` and renamed to `<name>` only once its
manifest is written and fsynced. Renaming, numbering (each manifest's `sequence`, the folder's
own creation order, which no clock can reorder), recording a state and pruning all happen under
an exclusive `flock` on `<folder>/.uaip-backups.lock`, so concurrent runs take turns; the lock
file remembers the last number and the recent names given, so none is ever given twice.

A run holds a shared `flock` on the backup folder it works with (writing, verifying, restoring):
pruning skips a backup whose lock it cannot take, and an unfinished `.partial-` folder is removed
only once nobody holds it (its run is gone).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from uaip_db.backups.manifest import (
    MANIFEST,
    PARTIAL_PREFIX,
    Backup,
    Manifest,
    UnreadableManifest,
    parse_manifest,
)
from uaip_db.errors import BackupError, CheckFailed, SettingsError
from uaip_db.files import fsync_folder, write_private

LOCK_FILE = ".uaip-backups.lock"
RECENT_NAMES = 200
SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
MANIFEST_TEMPORARY = f".{MANIFEST}.tmp"


# --- locks ----------------------------------------------------------------------------------


@contextlib.contextmanager
def folder_lock(out_dir: Path) -> Iterator[int]:
    """The folder's exclusive lock, waited for: renames, numbering, states and pruning. The lock
    file also keeps the last number and the recent names given (see `complete`)."""
    fd = os.open(Path(out_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


@dataclass
class Ledger:
    """What the lock file remembers: the last number and the recent names given, so a number or
    a name is never given twice, even after the backup that had it was pruned."""

    sequence: int = 0
    names: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, fd: int) -> Ledger:
        try:
            data = json.loads(os.pread(fd, 1 << 20, 0) or b"{}")
            sequence, names = data.get("sequence", 0), data.get("names", [])
        except (ValueError, AttributeError):
            return cls()
        if not isinstance(sequence, int) or not isinstance(names, list):
            return cls()
        return cls(sequence, [name for name in names if isinstance(name, str)])

    def write(self, fd: int, path: Path) -> None:
        text = json.dumps({"sequence": self.sequence, "names": self.names[-RECENT_NAMES:]})
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, text.encode() + b"\n", 0)
            os.fsync(fd)
        except OSError as error:
            raise OSError(error.errno, error.strerror, str(path)) from None


@contextlib.contextmanager
def holding(folder: Path) -> Iterator[None]:
    """A shared lock on a backup folder while it is read: pruning leaves it alone meanwhile."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        raise SettingsError(f"No backup at {folder}; check the path.") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CheckFailed(
                f"Backup {folder} is being removed by another run (db.backup --keep); "
                "use another backup."
            ) from None
        if not _same_folder(fd, folder):
            raise SettingsError(f"No backup at {folder} (it was just removed); use another.")
        yield
    finally:
        os.close(fd)


def _same_folder(fd: int, folder: Path) -> bool:
    try:
        now = os.stat(folder)
    except OSError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _take_exclusive(folder: Path) -> int | None:
    """An exclusive lock on a backup folder, or None when someone holds it (or it is gone)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if not _same_folder(fd, folder):
        os.close(fd)
        return None
    return fd


# --- writing a backup -----------------------------------------------------------------------


@dataclass
class Partial:
    """A backup being written: its folder (renamed when complete) and the lock its run holds."""

    out_dir: Path
    path: Path
    name: str
    fd: int = field(default=-1, repr=False)
    finished: bool = False

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        """Remove an unfinished backup (never one that was renamed to its final name)."""
        if not self.finished:
            shutil.rmtree(self.path, ignore_errors=True)
        self.release()


def backup_name(database: str, revisions: tuple[str, ...]) -> str:
    """`<dbname>-<UTC yyyymmddTHHMMSSZ>-<revision>`, safe as a folder name."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    label = "+".join(revisions) or "base"
    return f"{SAFE_NAME.sub('_', database)}-{stamp}-{SAFE_NAME.sub('_', label)}"


def start_partial(out_dir: Path, database: str, revisions: tuple[str, ...]) -> Partial:
    """Create `.partial-<name>-<pid>-<random>` (0700), held by this run until it is released."""
    name = backup_name(database, revisions)
    path = out_dir / f"{PARTIAL_PREFIX}{name}-{os.getpid()}-{secrets.token_hex(3)}"
    path.mkdir(mode=0o700)
    partial = Partial(out_dir, path, name)
    try:
        os.chmod(path, 0o700)
        partial.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(partial.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BaseException:
        partial.discard()
        raise
    return partial


def complete(partial: Partial, make: Callable[[int], Manifest]) -> Backup:
    """Number the backup, write its manifest (fsynced) and give it its final name, atomically
    for other runs: under the folder lock, so no two backups get one number or one name."""
    with folder_lock(partial.out_dir) as lock:
        ledger = Ledger.read(lock)
        ledger.sequence = next_sequence(partial.out_dir, ledger)
        manifest = make(ledger.sequence)
        write_file(partial.path / MANIFEST, manifest.to_json())
        final = free_name(partial.out_dir, partial.name, ledger.names)
        ledger.names.append(final.name)
        ledger.write(lock, partial.out_dir / LOCK_FILE)
        os.rename(partial.path, final)
        try:
            fsync_folder(partial.out_dir)
        except OSError:
            os.rename(final, partial.path)
            raise
        partial.finished = True
        partial.path = final
    return Backup(final, manifest)


def free_name(out_dir: Path, name: str, given: list[str]) -> Path:
    """`name`, or `name-2`, `name-3`... when taken now or given before (under the folder lock)."""
    attempt = 1
    while True:
        candidate = out_dir / (name if attempt == 1 else f"{name}-{attempt}")
        if not os.path.lexists(candidate) and candidate.name not in given:
            return candidate
        attempt += 1


def next_sequence(out_dir: Path, ledger: Ledger) -> int:
    """One more than any number given in the folder: the creation order, whatever the clocks."""
    numbers = [m.sequence for _, m in complete_backups(out_dir) if m.sequence is not None]
    return max([*numbers, ledger.sequence]) + 1


def record_state(folder: Path, state: str) -> Manifest:
    """Write `state` into a backup's manifest (replaced whole, so readers see old or new)."""
    folder = Path(folder)
    try:
        with folder_lock(folder.parent):
            manifest = read_complete(folder)
            if manifest is None:
                raise CheckFailed(f"Backup {folder} has no readable manifest to record {state!r}.")
            updated = manifest.with_state(state)
            (folder / MANIFEST_TEMPORARY).unlink(missing_ok=True)  # left by a killed writer
            write_file(folder / MANIFEST, updated.to_json())
    except OSError as error:
        raise BackupError(
            f"Could not record that backup {folder.name} is {state}: {describe_os_error(error)}."
        ) from None
    return updated


def write_file(path: Path, text: str) -> None:
    """write_private, whose error names the file even when the write itself failed (ENOSPC)."""
    try:
        write_private(path, text)
    except OSError as error:
        if error.filename is None:
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise


def describe_os_error(error: OSError) -> str:
    """`No space left on device (schema.json)`: the reason and the file, in one line."""
    reason = error.strerror or str(error)
    return f"{reason} ({Path(error.filename).name})" if error.filename else reason


# --- finding backups ------------------------------------------------------------------------


@dataclass(frozen=True)
class Damaged:
    """A backup folder whose manifest.json is there but cannot be read: never listed as a
    backup, restored or pruned, but named by `survey` so a listing does not hide it."""

    path: Path
    problem: str  # `its manifest.json cannot be read (...)`, as db.restore says it


@dataclass(frozen=True)
class Survey:
    """What a backup folder holds: its complete backups, newest first, and the damaged ones."""

    backups: list[tuple[Path, Manifest]]
    damaged: list[Damaged]


def examine(folder: Path) -> Manifest | Damaged | None:
    """A folder's manifest; Damaged when it has one that cannot be read; None when it is no
    backup (not a folder, a symlink, unfinished, or without manifest.json: one that is being
    renamed into place has none yet, scripts/backup)."""
    if folder.name.startswith(PARTIAL_PREFIX) or folder.is_symlink() or not folder.is_dir():
        return None
    if not os.path.lexists(folder / MANIFEST):
        return None
    try:
        return parse_manifest(folder)
    except UnreadableManifest as error:
        return Damaged(folder, str(error))
    except OSError as error:
        return Damaged(folder, str(UnreadableManifest(error.strerror or str(error))))


def read_complete(folder: Path) -> Manifest | None:
    """The manifest of a complete backup folder, or None: not a backup, unfinished, unreadable."""
    found = examine(folder)
    return found if isinstance(found, Manifest) else None


def creation_order(item: tuple[Path, Manifest]) -> tuple[bool, int, str, str]:
    """Numbered backups by number; older, unnumbered ones before them, by their clock."""
    path, manifest = item
    numbered = manifest.sequence is not None
    return numbered, manifest.sequence or 0, manifest.created_at, path.name


def survey(out_dir: Path) -> Survey:
    """Every complete backup in `out_dir` with a readable manifest, newest first, and every
    backup whose manifest cannot be read, by name (their files are not checked: db.restore
    does that). OSError when `out_dir` cannot be read (FileNotFoundError: it does not exist)."""
    found: list[tuple[Path, Manifest]] = []
    damaged: list[Damaged] = []
    for child in Path(out_dir).iterdir():
        examined = examine(child)
        if isinstance(examined, Manifest):
            found.append((child, examined))
        elif examined is not None:
            damaged.append(examined)
    return Survey(
        sorted(found, key=creation_order, reverse=True),
        sorted(damaged, key=lambda item: item.path.name),
    )


def complete_backups(out_dir: Path) -> list[tuple[Path, Manifest]]:
    """Every complete backup in `out_dir` with a readable manifest, newest first; none when
    there is no such folder."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    return survey(out_dir).backups


def list_backups(out_dir: Path, database_name: str) -> list[Path]:
    """Complete backups whose manifest names `database_name`, newest first."""
    return [path for path, m in complete_backups(out_dir) if m.database == database_name]


# --- removing -------------------------------------------------------------------------------


def prune(out_dir: Path, made: Backup, keep: int) -> list[Path]:
    """Keep the newest `keep` backups of `made`'s database (same server, name and oid) by
    creation order, and `made` whatever its place; remove the older ones nobody is using. The
    removed folders.

    Backups of other servers or databases, unfinished ones, ones whose manifest cannot be read or
    does not say which database it is of, and ones another run holds are never removed.
    """
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise SettingsError(
            f"keep={keep!r}: prune keeps at least the newest backup; use 1 or more."
        )
    out_dir = Path(out_dir)
    if made.path.parent.resolve() != out_dir.resolve():
        raise SettingsError(f"{made.path} is not in {out_dir}; prune the folder it is in.")
    identity = made.manifest.identity
    removed: list[Path] = []
    with folder_lock(out_dir):
        same = [path for path, m in complete_backups(out_dir) if m.identity.same_as(identity)]
        for path in same[keep:]:
            if path.name == made.path.name:
                continue
            fd = _take_exclusive(path)
            if fd is None:
                continue
            try:
                shutil.rmtree(path)
            finally:
                os.close(fd)
            removed.append(path)
        if removed:
            fsync_folder(out_dir)
    return removed


def sweep_partials(out_dir: Path) -> list[Path]:
    """Remove unfinished backups whose run is gone (nobody holds their lock); the removed."""
    out_dir = Path(out_dir)
    removed: list[Path] = []
    if not any(child.name.startswith(PARTIAL_PREFIX) for child in out_dir.iterdir()):
        return removed  # nothing to sweep: no need to create the lock file
    with folder_lock(out_dir):
        for child in sorted(out_dir.iterdir()):
            if not child.name.startswith(PARTIAL_PREFIX) or child.is_symlink():
                continue
            fd = _take_exclusive(child)
            if fd is None:
                continue
            try:
                shutil.rmtree(child)
            finally:
                os.close(fd)
            removed.append(child)
    return removed
