"""Each revision's expected schema, built by migrating a throwaway database one revision at a
time and taking a catalog snapshot after each (`inv db.snapshots`, `db.docs`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from uaip_db import files, paths
from uaip_db.catalog import expected
from uaip_db.catalog.snapshot import Snapshot, take_from
from uaip_db.migrations import history
from uaip_db.migrations.session import MigrationSession
from uaip_db.pg import reading

if TYPE_CHECKING:
    from uaip_db.servers.scratch import ScratchServer


def build(server: ScratchServer) -> dict[str, Snapshot]:
    """Upgrade a throwaway database one revision at a time, taking a snapshot after each."""
    database = server.create_database("uaip_snapshots")
    try:
        built: dict[str, Snapshot] = {}
        # One connection reads every snapshot: on a new connection one costs twice as much
        # (PostgreSQL fills its catalog caches first).
        with MigrationSession(database) as session, reading(database) as reader:
            for item in history.load().order:
                if not item.is_merge:  # a branch's schema is its own ancestors', no more
                    session.start_from(item.parent)
                session.upgrade(item.revision)
                built[item.revision] = take_from(reader)
        return built
    finally:
        server.drop_database(database.name)


# --- what the committed snapshots (and docs/schema/) were built from ---------------------------

SOURCES_NAME = "built-from.sha256"


def sources_path() -> Path:
    return expected.snapshot_dir() / SOURCES_NAME


def current_sources(index: history.ScriptIndex | None = None) -> dict[str, str]:
    """Revision -> sha256 of its file as it is now, base first."""
    index = index or history.load()
    return {item.revision: files.sha256_of(item.path) for item in index.order}


def recorded_sources() -> dict[str, str]:
    """Revision -> sha256 of its file when `inv db.snapshots` last wrote the snapshots."""
    try:
        text = sources_path().read_text(encoding="utf-8")
    except OSError:
        return {}
    recorded: dict[str, str] = {}
    for line in text.splitlines():
        digest, _, rest = line.partition("  ")
        revision = rest.rpartition("# ")[2].strip()
        if digest and revision:
            recorded[revision] = digest
    return recorded


def sources_text(index: history.ScriptIndex | None = None) -> str:
    """The sources file: one `SHA256  versions/FILE  # REVISION` line per revision."""
    index = index or history.load()
    root = paths.migrations_dir()
    lines = [
        f"{files.sha256_of(item.path)}  {Path(item.path).relative_to(root)}  # {item.revision}"
        for item in index.order
    ]
    return "\n".join(lines) + "\n"


def staleness(
    upto: str | None = None,
    recorded: Mapping[str, str] | None = None,
    what: str = "migrations/snapshots/",
    command: str = "inv db.snapshots",
) -> str | None:
    """One line when what was generated from the revision files (up to `upto`, default all)
    predates a revision file; None when it is current."""
    index = history.load()
    recorded = recorded_sources() if recorded is None else recorded
    wanted = index.ancestors([upto]) if upto and upto != expected.BASE else None
    for item in index.order:
        if wanted is not None and item.revision not in wanted:
            continue
        digest = recorded.get(item.revision)
        if digest is None:
            return (
                f"{what} does not cover revision {item.revision} ({item.doc}): run `{command}` "
                "and commit the result."
            )
        if digest != files.sha256_of(item.path):
            return (
                f"{what} was generated before revision {item.revision} ({item.doc}) last "
                f"changed: run `{command}` and commit the result."
            )
    return None


def write(built: dict[str, Snapshot]) -> list[Path]:
    """Write the snapshots and what they were built from; return the files that changed."""
    changed = expected.write(built)
    text = sources_text()
    path = sources_path()
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
        changed.append(path)
    return changed


def stale(built: dict[str, Snapshot]) -> list[str]:
    """Snapshots that differ from what the migrations build, or a stale sources file."""
    problems = expected.stale(built)
    if not problems and staleness() is not None:
        problems.append(f"{SOURCES_NAME}: older than the revision files")
    return problems
