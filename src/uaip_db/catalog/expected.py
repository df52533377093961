"""The expected schema of every revision: catalog snapshots committed in migrations/snapshots/.

`inv db.snapshots` rebuilds them by upgrading a throwaway database one revision at a time;
`inv db.snapshots --check` (run by `nox -s migrations`) fails when a committed file is stale.
`db.verify` and `db.stamp` compare live databases with these files, so they need no scratch
server. Snapshots are compared within one PostgreSQL major version (see docs/MIGRATIONS.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from uaip_db import paths
from uaip_db.catalog.snapshot import Snapshot, take
from uaip_db.errors import CheckFailed
from uaip_db.migrations import history, runner

if TYPE_CHECKING:
    from uaip_db.servers.scratch import ScratchServer

BASE = "base"
EMPTY = Snapshot({})


def snapshot_dir() -> Path:
    return paths.migrations_dir() / "snapshots"


def snapshot_path(revision: str) -> Path:
    return snapshot_dir() / f"{revision}.json"


def snapshot(revision: str) -> Snapshot:
    if revision == BASE:
        return EMPTY
    path = snapshot_path(revision)
    if not path.is_file():
        raise CheckFailed(
            f"No committed snapshot for revision {revision} ({path} is missing); "
            "run `inv db.snapshots` and commit the result."
        )
    return Snapshot.from_json(path.read_text(encoding="utf-8"))


def build(server: ScratchServer) -> dict[str, Snapshot]:
    """Upgrade a throwaway database one revision at a time, taking a snapshot after each."""
    database = server.create_database("uaip_snapshots")
    try:
        built: dict[str, Snapshot] = {}
        with runner.MigrationSession(database) as session:
            for item in history.load().order:
                session.upgrade(item.revision)
                built[item.revision] = take(database)
        return built
    finally:
        server.drop_database(database.name)


def stale(built: dict[str, Snapshot]) -> list[str]:
    """Revisions whose committed snapshot is missing or differs, and files of unknown revisions."""
    problems = []
    for revision, snapshot in built.items():
        path = snapshot_path(revision)
        if not path.is_file():
            problems.append(f"{path.name}: missing")
        elif path.read_text(encoding="utf-8") != snapshot.to_json():
            problems.append(f"{path.name}: differs from what the migrations build")
    for path in sorted(snapshot_dir().glob("*.json")):
        if path.stem not in built:
            problems.append(f"{path.name}: no such revision")
    return problems


def write(built: dict[str, Snapshot]) -> list[Path]:
    """Write every snapshot, remove those of revisions that no longer exist; return what changed."""
    snapshot_dir().mkdir(parents=True, exist_ok=True)
    changed = []
    for revision, snapshot in built.items():
        path = snapshot_path(revision)
        text = snapshot.to_json()
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    for path in snapshot_dir().glob("*.json"):
        if path.stem not in built:
            path.unlink()
            changed.append(path)
    return changed
