"""Each revision's expected schema, built by migrating a throwaway database one revision at a
time and taking a catalog snapshot after each (`inv db.snapshots`, `db.docs`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from uaip_db.catalog.snapshot import Snapshot, take
from uaip_db.migrations import history, runner

if TYPE_CHECKING:
    from uaip_db.servers.scratch import ScratchServer


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
