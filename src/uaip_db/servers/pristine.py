"""A data folder initdb made once per set of server binaries, copied for each throwaway cluster.

initdb is most of a throwaway server's start (about 0.4 s of 0.65 s here); copying the folder it
made takes about 0.05 s. The cache sits beside the throwaway clusters (tmpfs when there is room)
and is keyed by the binaries and everything initdb reads, so other binaries never share it. A
copy starts with the cached superuser password; `ScratchCluster.start` replaces it with a fresh
one before the server is handed out, and each copy gets its own system identifier, which
backups use to tell servers apart.
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

from uaip_db import process
from uaip_db.servers.local import Cluster

CACHE_PREFIX = "uaip-initdb-"
BUILDING = "building-"
# Bump when Cluster.initialize's options change, so older copies are not used.
LAYOUT = "1"


@dataclass(frozen=True)
class PristineData:
    """An initdb-made data folder (`root/data`) and its superuser's password."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def password(self) -> str:
        return (self.root / "password").read_text()

    def usable(self) -> bool:
        """Complete, and made by this account: the cache sits in a folder everyone may write
        (/dev/shm), under a name anyone can work out, so a folder planted there by another
        account (its own settings, its own password) must never be copied and started."""
        account = process.server_account()
        folder_owner = account[0] if account else os.geteuid()
        return (
            _private(self.root, folder_owner, forbidden=0o022, kind=stat.S_ISDIR)
            and _private(self.data, folder_owner, forbidden=0o077, kind=stat.S_ISDIR)
            and _private(self.root / "password", os.geteuid(), forbidden=0o077, kind=stat.S_ISREG)
            and (self.data / "PG_VERSION").is_file()
        )

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
    control = cluster.data / "global" / "pg_control"
    content = bytearray(control.read_bytes())
    end = crc_offset(bytes(content))
    identifier = (int(time.time()) << 32) | secrets.randbits(32)
    content[0:8] = identifier.to_bytes(8, sys.byteorder)
    content[end : end + 4] = crc32c(bytes(content[:end])).to_bytes(4, sys.byteorder)
    with control.open("r+b") as file:  # in place: the owner and mode stay the server's
        file.write(content)
    process.run(
        [cluster.tool("pg_resetwal"), "-D", str(cluster.data)],
        what="give the copied cluster its own identity (pg_resetwal)",
        as_server=True,
    )


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
    """What initdb's output depends on: the binaries (path, size, time), the superuser's name,
    the time zone it records, and the options Cluster.initialize passes (LAYOUT)."""
    postgres = (bindir / "postgres").stat()
    parts = [
        str(bindir.resolve()),
        str(postgres.st_size),
        str(postgres.st_mtime_ns),
        user,
        os.environ.get("TZ", ""),
        LAYOUT,
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def pristine_data(bindir: Path, user: str, parent: Path) -> PristineData | None:
    """The cached initdb folder for `bindir` in `parent`, made now when missing (None when it
    cannot be cached). Concurrent runs each build their own; the first renamed into place wins."""
    cached = PristineData(parent / f"{CACHE_PREFIX}{cache_key(bindir, user)}")
    if cached.usable():
        return cached
    sweep_abandoned_builds(parent)
    building = parent / f"{CACHE_PREFIX}{BUILDING}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        password = secrets.token_hex(16)
        Cluster(building, bindir).initialize(user, password, {}, sync=False)
        descriptor = os.open(building / "password", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(password)
        os.rename(building, cached.root)
    except OSError:
        pass  # another run renamed its copy into place first
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return cached if cached.usable() else None


def sweep_abandoned_builds(parent: Path) -> None:
    """Remove the half-built cache folders of runs that are gone."""
    for folder in parent.glob(f"{CACHE_PREFIX}{BUILDING}*"):
        pid = folder.name.removeprefix(CACHE_PREFIX + BUILDING).split("-", 1)[0]
        if pid.isdigit() and not process.is_running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
