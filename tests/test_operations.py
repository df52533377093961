"""operations: the one path that changes one database (db.upgrade, db.downgrade, fleet.upgrade),
against real PostgreSQL: the plan's refusals, the backup before the change, the checks after."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from tests.conftest import BASELINE, CHAIN, EMAIL, FREE_COLUMN, HEAD, WIDEN, sql, write_revision
from uaip_db import operations, pg
from uaip_db.checks.data_loss import DataLoss
from uaip_db.errors import CheckFailed, SettingsError, UsageError
from uaip_db.migrations import applied, runner
from uaip_db.settings import DatabaseConfig


def plan(database: DatabaseConfig, revision: str = "head") -> operations.UpgradePlan:
    with pg.connection(database) as conn:
        return operations.plan_upgrade(conn, database, revision)


def half_built_index(database: DatabaseConfig) -> None:
    """What a CREATE INDEX CONCURRENTLY that failed half-way leaves: an INVALID index (on a
    table made by hand, which no revision touches)."""
    sql(database, "CREATE TABLE hand_made (id int); INSERT INTO hand_made VALUES (1), (1)")
    with (
        psycopg.connect(**database.connect_kwargs(), autocommit=True) as conn,
        pytest.raises(psycopg.errors.UniqueViolation),
    ):
        conn.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_half_built ON hand_made (id)")


# --- planning an upgrade -----------------------------------------------------------------------


def test_a_plan_at_head_has_nothing_to_do(head_db: DatabaseConfig) -> None:
    found = plan(head_db)
    assert found.nothing_to_do and found.current == (HEAD,) and found.pending == ()


def test_a_plan_behind_lists_what_is_pending(empty_db: DatabaseConfig) -> None:
    runner.upgrade(empty_db, EMAIL)
    found = plan(empty_db)
    assert not found.nothing_to_do
    assert found.pending == tuple(CHAIN[CHAIN.index(EMAIL) + 1 :])
    assert plan(empty_db, EMAIL).nothing_to_do  # at the revision asked for, not only at head


def test_a_revision_the_scripts_do_not_know_is_refused(head_db: DatabaseConfig) -> None:
    sql(head_db, "UPDATE alembic_version SET version_num = 'deadbeef1234'")
    with pytest.raises(CheckFailed, match="deadbeef1234, which these migration scripts"):
        plan(head_db)


def test_an_unknown_target_is_refused_before_the_database_is_read(head_db: DatabaseConfig) -> None:
    with pytest.raises(UsageError, match="Unknown revision 'abc123'"):
        plan(head_db, "abc123")


def test_a_target_below_the_database_is_refused(head_db: DatabaseConfig) -> None:
    with pytest.raises(UsageError, match=f"It is past {EMAIL}; db.upgrade does not downgrade"):
        plan(head_db, EMAIL)


def test_an_invalid_index_at_head_is_never_nothing_to_do(head_db: DatabaseConfig) -> None:
    half_built_index(head_db)
    refused = r"Index idx_half_built is INVALID.*inv fleet\.upgrade"
    with pg.connection(head_db) as conn, pytest.raises(CheckFailed, match=refused):
        operations.plan_upgrade(conn, head_db, command="fleet.upgrade")


def test_an_invalid_index_behind_is_left_to_the_upgrade(empty_db: DatabaseConfig) -> None:
    """Steps outside a transaction are safe to run again: an interrupted run's INVALID index is
    the next upgrade's to finish, not a refusal."""
    runner.upgrade(empty_db, BASELINE)
    sql(empty_db, "ALTER TABLE sessions ADD COLUMN email VARCHAR(255)")
    sql(empty_db, "CREATE INDEX idx_sessions_email ON sessions (email)")
    sql(
        empty_db,
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'idx_sessions_email'::regclass",
    )
    found = plan(empty_db)
    assert found.invalid == ("idx_sessions_email",)
    outcome = operations.apply_upgrade(found)
    assert outcome.current == (HEAD,)
    assert sql(empty_db, "SELECT count(*) FROM pg_index WHERE NOT indisvalid") == [(0,)]


# --- applying an upgrade -----------------------------------------------------------------------


def test_the_backup_comes_before_the_change_and_the_check_after(empty_db: DatabaseConfig) -> None:
    runner.upgrade(empty_db, EMAIL)
    events: list[str] = []

    def take_backup(database: DatabaseConfig) -> None:
        events.append(f"backup at {','.join(applied.current_revisions(database))}")

    outcome = operations.apply_upgrade(
        plan(empty_db),
        backup_asked=True,
        take_backup=take_backup,
        report=events.append,
        on_migrating=lambda: events.append("migrating"),
    )
    assert events[0] == "Taking a verified backup first (--backup):"
    assert events[1] == f"backup at {EMAIL}"  # the database was not changed yet
    now_at = next(number for number, line in enumerate(events) if line.startswith("Now at "))
    assert 1 < events.index("migrating") < now_at
    assert any(line.startswith("Upgrade finished in") for line in events[2:now_at])
    assert outcome.backed_up and outcome.before == (EMAIL,) and outcome.current == (HEAD,)
    assert outcome.ran == tuple(CHAIN[CHAIN.index(EMAIL) + 1 :])
    assert outcome.reached.differences == []


def test_production_takes_a_backup_unasked(empty_db: DatabaseConfig) -> None:
    taken: list[DatabaseConfig] = []
    production = replace(empty_db, env="production")
    with pg.connection(production) as conn:
        found = operations.plan_upgrade(conn, production)
    outcome = operations.apply_upgrade(found, take_backup=taken.append)
    assert taken == [production] and outcome.backed_up
    assert operations.backup_reason(production, asked=False) == "DB_ENV=production"
    assert operations.backup_reason(empty_db, asked=False) is None


@pytest.mark.parametrize(
    ("failure", "kind"),
    [(SettingsError("UAIP_BACKUP_DIR is a file."), SettingsError), (OSError("disk"), CheckFailed)],
)
def test_a_failed_backup_changes_nothing(
    empty_db: DatabaseConfig, failure: Exception, kind: type[Exception]
) -> None:
    def take_backup(_database: DatabaseConfig) -> None:
        raise failure

    migrating: list[bool] = []
    with pytest.raises(kind, match="The backup before the upgrade failed, so nothing was changed"):
        operations.apply_upgrade(
            plan(empty_db),
            backup_asked=True,
            take_backup=take_backup,
            on_migrating=lambda: migrating.append(True),
        )
    assert migrating == [] and applied.current_revisions(empty_db) == ()


def test_the_default_backup_is_verified_and_restorable(
    empty_db: DatabaseConfig, tmp_path: Path
) -> None:
    runner.upgrade(empty_db, EMAIL)
    from uaip_db.backups import manifest

    made = operations.verified_backup(empty_db, tmp_path / "backups")
    assert made.parent == tmp_path / "backups"
    assert manifest.read_manifest(made).state == manifest.VERIFIED


def test_an_invalid_index_the_upgrade_leaves_is_refused_after(empty_db: DatabaseConfig) -> None:
    runner.upgrade(empty_db, EMAIL)
    half_built_index(empty_db)
    found = plan(empty_db)  # behind: planned, not refused
    with pytest.raises(CheckFailed, match="Index idx_half_built is INVALID"):
        operations.apply_upgrade(found)
    assert applied.current_revisions(empty_db) == (HEAD,)


def test_a_schema_that_is_not_the_snapshot_reached_is_refused(
    head_db: DatabaseConfig, checkout: Path
) -> None:
    from uaip_db.migrations import snapshots

    versions = checkout / "migrations" / "versions"
    create = f"CREATE INDEX ix_sessions_unsaid ON sessions ({FREE_COLUMN.name})"
    write_revision(versions, "eeee00000007", HEAD, [create], ["DROP INDEX ix_sessions_unsaid"])
    folder = checkout / "migrations" / "snapshots"  # its snapshot says it changes nothing
    shutil.copy(folder / f"{HEAD}.json", folder / "eeee00000007.json")
    snapshots.sources_path().write_text(snapshots.sources_text(), encoding="utf-8")
    with pytest.raises(CheckFailed, match="The upgrade reached revision eeee00000007") as caught:
        operations.apply_upgrade(plan(head_db))
    assert "ix_sessions_unsaid" in str(caught.value)
    assert "upgrade() of eeee00000007" in str(caught.value)


# --- a downgrade -------------------------------------------------------------------------------


def test_a_downgrade_plan_counts_what_it_would_drop(head_db: DatabaseConfig) -> None:
    sql(head_db, "INSERT INTO sessions (user_id, email) VALUES ('a', 'a@example.org')")
    said: list[str] = []
    found = operations.plan_downgrade(head_db, BASELINE, report=said.append)
    assert found.target == BASELINE and found.current == (HEAD,)
    assert DataLoss("sessions.email", 1) in (found.losses or ())
    assert found.drops_data and found.needs_confirmation
    assert "  would drop sessions.email: 1 row(s) with a value" in said


def test_in_production_every_downgrade_needs_confirming(head_db: DatabaseConfig) -> None:
    quiet = operations.plan_downgrade(head_db, "-1")
    production = operations.plan_downgrade(replace(head_db, env="production"), "-1")
    assert quiet.needs_confirmation == quiet.drops_data == production.drops_data
    assert production.needs_confirmation


def test_a_downgrade_backs_up_first_then_checks_what_it_reached(head_db: DatabaseConfig) -> None:
    seen: list[tuple[str, ...]] = []
    found = operations.plan_downgrade(head_db, WIDEN)
    outcome = operations.apply_downgrade(
        found,
        backup_asked=True,
        take_backup=lambda database: seen.append(applied.current_revisions(database)),
    )
    assert seen == [(HEAD,)]  # taken before anything was reverted
    assert outcome.current == (WIDEN,) and outcome.backed_up
    assert outcome.ran == tuple(reversed(CHAIN[CHAIN.index(WIDEN) + 1 :]))
    assert outcome.reached.differences == []


def test_a_downgrade_planned_on_another_state_reverts_nothing(head_db: DatabaseConfig) -> None:
    found = operations.plan_downgrade(head_db, "-1")
    runner.downgrade(head_db, WIDEN)  # another runner, between the plan and the lock
    with pytest.raises(UsageError, match="changed while this downgrade waited"):
        operations.apply_downgrade(found)
    assert applied.current_revisions(head_db) == (WIDEN,)


def test_a_downgrade_that_leaves_an_index_behind_is_refused(
    head_db: DatabaseConfig, checkout: Path
) -> None:
    versions = checkout / "migrations" / "versions"
    create = f"CREATE INDEX ix_sessions_forgotten ON sessions ({FREE_COLUMN.name})"
    write_revision(versions, "eeee00000008", HEAD, [create], ["SELECT 1"])
    runner.upgrade(head_db, "head")
    with pytest.raises(CheckFailed, match=f"The downgrade reached revision {HEAD}"):
        operations.apply_downgrade(operations.plan_downgrade(head_db, "-1"))
