"""The ledger records each applied revision with its file hash, who, when and how long."""

from __future__ import annotations

import psycopg

from tests.conftest import HEAD
from uaip_db import files
from uaip_db.migrations import history, ledger, runner
from uaip_db.migrations.baseline import BASELINE_REVISION
from uaip_db.settings import DatabaseConfig


def entries(database: DatabaseConfig) -> dict[str, ledger.Entry]:
    with psycopg.connect(**database.connect_kwargs(), autocommit=True) as conn:
        return ledger.entries(conn)


def test_upgrade_records_every_revision(empty_db: DatabaseConfig) -> None:
    assert entries(empty_db) == {}
    runner.upgrade(empty_db, "head")
    recorded = entries(empty_db)
    scripts = history.script_directory()
    assert set(recorded) == {s.revision for s in scripts.walk_revisions()}
    for revision, entry in recorded.items():
        script = scripts.get_revision(revision)
        assert script is not None
        assert entry.file_sha256 == files.sha256_of(script.path)
        assert entry.how == "upgrade"
        assert entry.duration_ms is not None and entry.duration_ms >= 0
        assert " as uaip_user" in entry.applied_by


def test_downgrade_forgets_and_stamp_records(empty_db: DatabaseConfig) -> None:
    runner.upgrade(empty_db, "head")
    runner.downgrade(empty_db, BASELINE_REVISION)
    assert set(entries(empty_db)) == {BASELINE_REVISION}
    runner.stamp(empty_db, "head")
    recorded = entries(empty_db)
    assert recorded[HEAD].how == "stamp"
