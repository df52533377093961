"""Relation locks per statement, read from the migration's own connection."""

from __future__ import annotations

from tests.conftest import EMAIL
from uaip_db.migrations import runner
from uaip_db.migrations.baseline import BASELINE_REVISION
from uaip_db.migrations.lock_report import LockRecorder, StatementLocks, held_by, shorten
from uaip_db.settings import DatabaseConfig


def test_each_statement_in_a_transaction_is_named_with_its_locks(empty_db: DatabaseConfig) -> None:
    runner.upgrade(empty_db, BASELINE_REVISION)
    recorder = LockRecorder(empty_db)
    try:
        runner.upgrade(empty_db, EMAIL, locks=recorder)
    finally:
        recorder.close()
    statements = recorder.by_revision[EMAIL]
    assert statements[0].statement.startswith("ALTER TABLE sessions ADD COLUMN")
    assert statements[0].locks == ["AccessExclusiveLock on sessions"]
    assert "AccessExclusiveLock on sessions" in held_by(statements)


def test_statements_are_shortened_to_one_line() -> None:
    assert shorten("SELECT\n  1") == "SELECT 1"
    assert len(shorten("x" * 500)) == 100
    item = StatementLocks("DROP TABLE t", ["AccessExclusiveLock on t"])
    assert item.line() == "DROP TABLE t: AccessExclusiveLock on t"


def test_a_quick_statement_outside_a_transaction_is_never_missed(
    empty_db: DatabaseConfig,
) -> None:
    # EMAIL's index is built CONCURRENTLY on an empty table: over in a few milliseconds.
    runner.upgrade(empty_db, BASELINE_REVISION)
    for attempt in range(12):
        recorder = LockRecorder(empty_db)
        try:
            runner.upgrade(empty_db, EMAIL, locks=recorder)
        finally:
            recorder.close()
        concurrent = [
            item for item in recorder.by_revision[EMAIL] if "CONCURRENTLY" in item.statement.upper()
        ]
        assert concurrent, f"attempt {attempt}: {recorder.by_revision[EMAIL]}"
        assert concurrent[0].locks == ["ShareUpdateExclusiveLock on sessions"]
        assert concurrent[0].held_seconds is not None
        runner.downgrade(empty_db, BASELINE_REVISION)
