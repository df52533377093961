"""Generated files committed to the repository: write the ones that changed, or say which differ.

A folder of generated files (docs/schema/, migrations/snapshots/) is given as
{relative POSIX name: text}. `write` touches only the files whose bytes would change and removes
stale ones; `compare` lists the files that are missing, extra or different, each difference
with a short unified-diff excerpt. Callers phrase the result for their own folder.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DIFF_LINES_PER_FILE = 40
MARKER_SEARCH_CHARS = 1000
MISSING = "missing"
EXTRA = "extra"
CHANGED = "changed"


@dataclass(frozen=True)
class Difference:
    """One file that is `missing`, `extra` (there but not generated) or `changed`.

    `excerpt` (for a changed file) is what to show: `name: differs` and the first lines of a
    unified diff, or one line when only line endings or the final newline differ.
    """

    name: str
    state: str
    excerpt: tuple[str, ...] = ()


def existing_files(directory: Path, pattern: str = "**/*") -> dict[str, Path]:
    """Files under `directory` matching `pattern`, by relative POSIX name (none when absent)."""
    if not directory.is_dir():
        return {}
    return {
        path.relative_to(directory).as_posix(): path
        for path in sorted(directory.glob(pattern))
        if path.is_file()
    }


def read_text(path: Path, *, universal_newlines: bool = False) -> str:
    """A committed file's text; undecodable bytes become U+FFFD, so they show as a difference.

    With `universal_newlines`, `\\r\\n` and `\\r` read as `\\n` (as `Path.read_text` reads them),
    so a checkout with CRLF line endings is not a difference.
    """
    text = path.read_bytes().decode("utf-8", errors="replace")
    if universal_newlines:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def compare(
    directory: Path,
    files: Mapping[str, str],
    *,
    pattern: str = "**/*",
    universal_newlines: bool = False,
) -> list[Difference]:
    """How the files in `directory` (those matching `pattern`) differ from `files`, by name."""
    existing = existing_files(directory, pattern)
    found = []
    for name in sorted(existing.keys() | files.keys()):
        if name not in existing:
            found.append(Difference(name, MISSING))
        elif name not in files:
            found.append(Difference(name, EXTRA))
        else:
            committed = read_text(existing[name], universal_newlines=universal_newlines)
            excerpt = diff_excerpt(name, committed, files[name])
            if excerpt:
                found.append(Difference(name, CHANGED, tuple(excerpt)))
    return found


def diff_excerpt(name: str, committed: str, rendered: str) -> list[str]:
    """Empty when the texts are equal; else a header and at most DIFF_LINES_PER_FILE diff lines."""
    if committed == rendered:
        return []
    diff = list(
        difflib.unified_diff(
            committed.splitlines(),
            rendered.splitlines(),
            fromfile=f"{name} (committed)",
            tofile=f"{name} (rendered)",
            lineterm="",
        )
    )
    if not diff:
        return [f"{name}: differs in line endings or the final newline only"]
    shown = [f"{name}: differs", *diff[:DIFF_LINES_PER_FILE]]
    if len(diff) > DIFF_LINES_PER_FILE:
        shown.append(f"{name}: ... {len(diff) - DIFF_LINES_PER_FILE} more lines of difference")
    return shown


def write(
    directory: Path,
    files: Mapping[str, str],
    *,
    pattern: str = "**/*",
    marker: str | None = None,
    universal_newlines: bool = False,
) -> list[Path]:
    """Write the files that differ and remove stale ones; return the paths written or removed.

    A stale file matches `pattern` but is not in `files`; when `marker` is given, only stale
    files with `marker` near their start (files written once by the same generator) are
    removed, and other files are left alone. A file is rewritten unless it holds `text` byte
    for byte (line for line with `universal_newlines`).
    """
    changed = []
    for name, text in sorted(files.items()):
        path = directory / name
        if not unchanged(path, text, universal_newlines=universal_newlines):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(text.encode("utf-8"))
            changed.append(path)
    for name, path in existing_files(directory, pattern).items():
        if name not in files and (
            marker is None or marker in read_text(path)[:MARKER_SEARCH_CHARS]
        ):
            path.unlink()
            changed.append(path)
    return changed


def unchanged(path: Path, text: str, *, universal_newlines: bool = False) -> bool:
    """Whether `path` already holds `text` (byte for byte, or line for line)."""
    if not path.is_file():
        return False
    if universal_newlines:
        return read_text(path, universal_newlines=True) == text
    return path.read_bytes() == text.encode("utf-8")
