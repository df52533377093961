"""A data folder initdb made once per set of server binaries, copied for each throwaway cluster.

initdb is most of a throwaway server's start (about 0.4 s of 0.65 s here); copying the folder it
made takes about 0.05 s. The cache sits beside the throwaway clusters (tmpfs when there is room)
and is keyed by the binaries, the account, the time zone and initdb's options, so other binaries
or accounts never share it; a cache whose binaries are gone is swept. A copy starts with the
cached superuser password; `ScratchCluster.start` replaces it with a fresh one before the server
is handed out, and each copy gets its own system identifier, which backups use to tell servers
apart. A cache that is missing, damaged or not safely ours makes the caller run initdb instead.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from uaip_db import pg, process
from uaip_db.errors import ServerError
from uaip_db.files import write_private
from uaip_db.servers.local import Cluster

CACHE_PREFIX = "uaip-initdb-"
BUILDING = "building-"
BINDIR_FILE = "bindir"  # which binaries made the cache: it goes when they do
PASSWORD_FILE = "password"
# Bump when Cluster.initialize's options change, so older copies are not used.
LAYOUT = "2"


@dataclass(frozen=True)
class PristineData:
    """An initdb-made data folder (`root/cluster/data`) and its superuser's password (read when
    the folder was found, so a cache deleted meanwhile cannot break a start half-way).

    `root` belongs to this account and no one else may write in it: when we run as root, the
    cluster below it belongs to the server account, which must not be able to plant links or
    pipes where root reads or writes (the password, the binaries' path)."""

    root: Path
    password: str

    @property
    def data(self) -> Path:
        return cluster_in(self.root).data

    def copy_to(self, cluster: Cluster) -> None:
        """Make `cluster`'s data folder a copy of this one (ownership and modes kept) with a
        system identifier of its own."""
        cluster.root.mkdir(parents=True, exist_ok=True)
        os.chmod(cluster.root, 0o700)
        cluster.socket_dir.mkdir(parents=True, exist_ok=True)
        process.run(
            ["cp", "-a", str(self.data), str(cluster.data)],
            what="copy the cached initdb folder",
        )
        for folder in (cluster.root, cluster.socket_dir):
            process.give_to_server_account(folder, recursive=False)
        give_new_identity(cluster)

    def forget(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def folder_owner() -> int:
    """Who owns the cached cluster: the server account when we run as root, else us."""
    account = process.server_account()
    return account[0] if account else os.geteuid()


def cluster_in(root: Path) -> Cluster:
    return Cluster(root / "cluster", Path())


def load(root: Path) -> PristineData | None:
    """The cached folder at `root` when it is complete and made by this account: the cache sits
    in a folder everyone may write (/dev/shm), under a name anyone can work out, so a folder
    planted there by another account (its own settings, its own password) is never used."""
    data = cluster_in(root).data
    if not (
        _private(root, os.geteuid(), forbidden=0o022, kind=stat.S_ISDIR)
        and _private(data, folder_owner(), forbidden=0o077, kind=stat.S_ISDIR)
        and (data / "PG_VERSION").is_file()
    ):
        return None
    password = read_private(root / PASSWORD_FILE)
    return PristineData(root, password) if password else None


def read_private(path: Path) -> str | None:
    """The text of a file of ours that no one else may read or write, never through a link or
    from a pipe; None otherwise."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(descriptor) as file:
        found = os.fstat(file.fileno())
        if not (
            stat.S_ISREG(found.st_mode)
            and found.st_uid == os.geteuid()
            and not found.st_mode & 0o077
        ):
            return None
        return file.read()


def _private(path: Path, owner: int, *, forbidden: int, kind: Callable[[int], bool]) -> bool:
    """`path` itself (not a link) is of `kind`, belongs to `owner`, and has none of the
    `forbidden` permission bits."""
    try:
        found = path.lstat()
    except OSError:
        return False
    return kind(found.st_mode) and found.st_uid == owner and not found.st_mode & forbidden


def give_new_identity(cluster: Cluster) -> None:
    """Write a new system identifier into a stopped cluster's pg_control (its first field; the
    CRC-32C that follows the fields is recomputed), then let pg_resetwal start a WAL that
    carries it, as initdb would have."""
    try:
        _write_identity(cluster.data, (int(time.time()) << 32) | secrets.randbits(32))
    except OSError as error:
        raise ServerError(
            f"Could not give the copied cluster its own identity: {error.strerror}."
        ) from None
    process.run(
        [cluster.tool("pg_resetwal"), "-D", str(cluster.data)],
        what="give the copied cluster its own identity (pg_resetwal)",
        as_server=True,
    )


def _write_identity(data_folder: Path, identifier: int) -> None:
    # Opened one folder at a time without following links: when we run as root, the data
    # folder belongs to the server account, which must not be able to point us elsewhere.
    data = os.open(data_folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        folder = os.open("global", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=data)
        try:
            control = os.open(
                "pg_control", os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder
            )
        finally:
            os.close(folder)
    finally:
        os.close(data)
    with os.fdopen(control, "r+b") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise ServerError("The copied cluster's pg_control is not a file.")
        content = bytearray(file.read())
        try:
            end = crc_offset(bytes(content))
        except ValueError:
            raise ServerError("The copied cluster's pg_control is damaged.") from None
        content[0:8] = identifier.to_bytes(8, sys.byteorder)
        content[end : end + 4] = crc32c(bytes(content[:end])).to_bytes(4, sys.byteorder)
        file.seek(0)
        file.write(content)  # in place: the owner and mode stay the server's


def crc_offset(control: bytes) -> int:
    """Where pg_control's CRC sits: the first aligned offset whose 4 bytes are the CRC-32C of
    everything before them (the layout differs between major versions)."""
    crc = 0xFFFFFFFF
    for offset, byte in enumerate(control[:1024]):
        if offset >= 8 and offset % 4 == 0:
            stored = int.from_bytes(control[offset : offset + 4], sys.byteorder)
            if crc ^ 0xFFFFFFFF == stored:
                return offset
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    raise ValueError("no CRC found in pg_control")


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _crc32c_table() -> list[int]:
    table = []
    for index in range(256):
        value = index
        for _ in range(8):
            value = (value >> 1) ^ 0x82F63B78 if value & 1 else value >> 1
        table.append(value)
    return table


_CRC32C_TABLE = _crc32c_table()


def cache_key(bindir: Path, user: str) -> str:
    """The binaries (path, size, time), the superuser's name, the time zone initdb records, the
    options Cluster.initialize passes (LAYOUT), and the account: each account has its own."""
    postgres = (bindir / "postgres").stat()
    parts = [
        str(os.geteuid()),
        str(bindir.resolve()),
        str(postgres.st_size),
        str(postgres.st_mtime_ns),
        user,
        pg.child_environment().get("TZ", ""),  # what initdb is given
        LAYOUT,
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def pristine_data(bindir: Path, user: str, parent: Path) -> PristineData | None:
    """The cached initdb folder for `bindir` in `parent`, made now when missing (None when it
    cannot be: then the caller runs initdb itself). Concurrent runs each build their own; the
    first renamed into place wins."""
    if shutil.which("cp") is None or not (bindir / "pg_resetwal").is_file():
        return None  # a copy could not be made its own server
    root = parent / f"{CACHE_PREFIX}{cache_key(bindir, user)}"
    found = load(root)
    if found is not None:
        return found
    if os.path.lexists(root):
        if not _private(root, os.geteuid(), forbidden=0, kind=stat.S_ISDIR):
            return None  # another account's: never used, never built over
        shutil.rmtree(root, ignore_errors=True)  # ours, but incomplete: made again
    building = parent / f"{CACHE_PREFIX}{BUILDING}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        # Ours, and only entered (not read or written) by the server account running initdb.
        building.mkdir(mode=0o711)
        os.chmod(building, 0o711)
        password = secrets.token_hex(16)
        Cluster(building / "cluster", bindir).initialize(user, password, {}, sync=False)
        write_private(building / PASSWORD_FILE, password)
        write_private(building / BINDIR_FILE, str(bindir.resolve()))
        os.rename(building, root)
    except OSError:
        pass  # another run renamed its copy into place first
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return load(root)


def sweep_abandoned_builds(parent: Path) -> None:
    """Remove the half-built cache folders of runs that are gone, and this account's caches
    whose binaries are gone."""
    for folder in parent.glob(f"{CACHE_PREFIX}*"):
        if folder.name.startswith(CACHE_PREFIX + BUILDING):
            pid = folder.name.removeprefix(CACHE_PREFIX + BUILDING).split("-", 1)[0]
            if pid.isdigit() and not process.is_running(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)
            continue
        if not _private(folder, os.geteuid(), forbidden=0o022, kind=stat.S_ISDIR):
            continue
        made_by = read_private(folder / BINDIR_FILE)
        if made_by is not None and not (Path(made_by) / "postgres").is_file():
            shutil.rmtree(folder, ignore_errors=True)
