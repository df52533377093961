"""The committed snapshots hold on the major version the schema targets, and on the others.

They were taken on PostgreSQL 15 and read the same on 16 and 17 (MIGRATIONS.md section 7): the
catalog text they compare does not change between these majors for this schema. These tests
fail, naming the server's version, the day one does.
"""

from __future__ import annotations

import pytest

from tests.conftest import sql
from uaip_db.migrations import snapshots
from uaip_db.servers.binaries import RELEASES, system_binaries, wanted_major
from uaip_db.servers.scratch import ScratchServer, scratch_server


def server_version(server: ScratchServer) -> str:
    return str(sql(server.admin, "SHOW server_version")[0][0])


def test_the_committed_snapshots_match_on_the_test_server(server: ScratchServer) -> None:
    version = server_version(server)
    if server.cluster is not None:  # the throwaway server runs the wanted major (default 16)
        assert version.split(".")[0] == str(wanted_major())
    assert snapshots.stale(snapshots.build(server)) == [], f"on PostgreSQL {version}"


def test_the_committed_snapshots_match_on_the_systems_other_major(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    others = [
        item
        for item in system_binaries()
        if item.major != wanted_major() and item.major in RELEASES
    ]
    if not others:
        pytest.skip("this machine has PostgreSQL of the wanted major only")
    monkeypatch.delenv("PG_BINDIR", raising=False)
    monkeypatch.delenv("UAIP_TEST_SERVER", raising=False)
    monkeypatch.setenv("UAIP_PG_VERSION", str(others[0].major))
    with scratch_server() as other:
        version = server_version(other)
        assert version.split(".")[0] == str(others[0].major)
        assert snapshots.stale(snapshots.build(other)) == [], f"on PostgreSQL {version}"
