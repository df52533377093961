"""Files we hash and files we write for one owner only: the one place for each."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from uaip_db.errors import FileRefused

CHUNK = 1 << 20
# The most a settings file (a targets file, a pg_service.conf) may hold.
SETTINGS_FILE_LIMIT = 1 << 20


def sha256_of(path: str | Path) -> str:
    """The sha256 of a file's bytes, as hex; read in chunks, so a large dump costs no memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` (0600) through a temporary file, so a reader sees all or nothing;
    a link at `path` is replaced, never written through."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def fsync_folder(folder: Path) -> None:
    """Make a rename or removal inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_settings_file(path: Path, limit: int = SETTINGS_FILE_LIMIT) -> bytes:
    """The bytes of a small regular file: FileRefused for a device (/dev/zero), a FIFO (opened
    without waiting for a writer), a folder, or a file over `limit` bytes, without reading more
    than `limit` + 1 of it; OSError (FileNotFoundError, ...) as open() raises it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FileRefused(path, f"is {_kind(mode)}, not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit and (chunk := os.read(fd, min(CHUNK, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileRefused(path, f"is larger than {limit // 1024} KiB")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"
