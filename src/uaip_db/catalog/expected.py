"""The expected schema of every revision: catalog snapshots committed in migrations/snapshots/.

`inv db.snapshots` rebuilds them (migrations.snapshots.build) one revision at a time;
`inv db.snapshots --check` (run by `nox -s migrations`) fails when a committed file is stale.
`db.verify` and `db.stamp` compare live databases with these files, so they need no scratch
server. Snapshots are compared within one PostgreSQL major version (see docs/MIGRATIONS.md).
"""

from __future__ import annotations

from pathlib import Path

from uaip_db import generated, paths
from uaip_db.catalog.snapshot import Snapshot
from uaip_db.errors import CheckFailed

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


def committed(revision: str) -> Snapshot | None:
    """The committed snapshot of `revision`; None when it has none yet."""
    try:
        return snapshot(revision)
    except CheckFailed:
        return None


def stale(built: dict[str, Snapshot]) -> list[str]:
    """Revisions whose committed snapshot is missing or differs, and files of unknown revisions."""
    files = {
        snapshot_path(revision).name: snapshot.to_json() for revision, snapshot in built.items()
    }
    differences = generated.compare(
        snapshot_dir(), files, pattern="*.json", universal_newlines=True
    )
    state = {difference.name: difference.state for difference in differences}
    said = {
        generated.MISSING: "missing",
        generated.CHANGED: "differs from what the migrations build",
    }
    # Revisions in the order they are built, then files of unknown revisions by name.
    problems = [f"{name}: {said[state[name]]}" for name in files if name in state]
    problems += [f"{name}: no such revision" for name in state if state[name] == generated.EXTRA]
    return problems


def write(built: dict[str, Snapshot]) -> list[Path]:
    """Write every snapshot, remove those of revisions that no longer exist; return what changed."""
    snapshot_dir().mkdir(parents=True, exist_ok=True)
    files = {
        snapshot_path(revision).name: snapshot.to_json() for revision, snapshot in built.items()
    }
    return generated.write(snapshot_dir(), files, pattern="*.json", universal_newlines=True)
