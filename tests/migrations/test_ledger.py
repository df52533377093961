"""The ledger records each applied revision with its file hash, who, when and how long."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.conftest import HEAD, sql, write_revision
from uaip_db import files
from uaip_db.errors import MigrationError
from uaip_db.migrations import applied, backfill_progress, history, ledger, runner
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


BOOKKEEPING_DROPS = {
    "ledger": ("uaip_db_migration_ledger", ["DROP TABLE public.uaip_db_migration_ledger"]),
    "ledger-renamed": (
        "uaip_db_migration_ledger",
        ["ALTER TABLE public.uaip_db_migration_ledger RENAME TO old_ledger"],
    ),
    "ledger-made-again": (
        "uaip_db_migration_ledger",
        [
            "DROP TABLE public.uaip_db_migration_ledger",
            ledger.CREATE_LEDGER,
        ],
    ),
    "backfill-progress": (
        "uaip_db_backfill_progress",
        ["DROP TABLE public.uaip_db_backfill_progress"],
    ),
    # Alembic's UPDATE of the version row fails first; still one line naming both.
    "version-table": ("alembic_version", ["DROP TABLE public.alembic_version"]),
}


@pytest.mark.parametrize("case", sorted(BOOKKEEPING_DROPS))
def test_a_revision_that_drops_a_bookkeeping_table_is_refused(
    checkout: Path, head_db: DatabaseConfig, case: str
) -> None:
    """Issue 24 item 7: the ledger came back empty but for one row, and db.check stopped
    noticing applied revisions edited later."""
    table, statements = BOOKKEEPING_DROPS[case]
    # The backfill progress table exists once a backfill ran; make it exist here.
    sql(head_db, backfill_progress.CREATE_PROGRESS_TABLE.replace("EXISTS ", "EXISTS public.", 1))
    before = entries(head_db)
    write_revision(
        checkout / "migrations" / "versions",
        "5e7d00000007",
        HEAD,
        statements,
        [],
    )
    with pytest.raises(MigrationError) as raised:
        runner.upgrade(head_db, "head")
    message = str(raised.value)
    assert "5e7d00000007" in message and table in message, message
    assert "Traceback" not in message and len(message.splitlines()) <= 2
    assert applied.current_revisions(head_db) == (HEAD,)
    assert entries(head_db) == before
    assert sql(head_db, "SELECT pg_catalog.to_regclass(%s) IS NOT NULL", (f"public.{table}",)) == [
        (True,)
    ]
