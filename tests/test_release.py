"""Backups before change, rehearsals and the release report, as the tasks run them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import COMMENTS, EMAIL, HEAD, WIDEN, run_cli, sql, write_revision
from uaip_db.migrations import runner, snapshots
from uaip_db.migrations.baseline import BASELINE_REVISION
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig


@pytest.fixture
def behind_db(head_db: DatabaseConfig) -> DatabaseConfig:
    """A database one revision behind head, with a few rows."""
    runner.downgrade(head_db, WIDEN)
    sql(
        head_db,
        "INSERT INTO sessions (user_id, project_name) VALUES ('u1', 'Churn'), ('u2', 'bad')",
    )
    return head_db


def test_upgrade_with_backup_takes_a_verified_backup_first(
    behind_db: DatabaseConfig, tmp_path: Path
) -> None:
    result = run_cli(
        "inv", "db.upgrade", "--backup", database=behind_db, env={"UAIP_BACKUP_DIR": str(tmp_path)}
    )
    assert result.returncode == 0, result.stderr
    assert "proven restorable" in result.stdout
    assert result.stdout.index("proven restorable") < result.stdout.index(f"applied {HEAD}")
    assert len(list(tmp_path.glob("*/manifest.json"))) == 1


def test_a_failing_backup_stops_the_change(behind_db: DatabaseConfig, tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    result = run_cli(
        "inv", "db.upgrade", "--backup", database=behind_db, env={"UAIP_BACKUP_DIR": str(blocked)}
    )
    assert result.returncode != 0
    assert runner.current_revisions(behind_db) == (WIDEN,)


def test_rehearse_restores_upgrades_and_leaves_the_source_alone(
    behind_db: DatabaseConfig, tmp_path: Path
) -> None:
    env = {"UAIP_BACKUP_DIR": str(tmp_path)}
    assert run_cli("inv", "db.backup", database=behind_db, env=env).returncode == 0
    result = run_cli("inv", "db.rehearse", database=behind_db, env=env)
    assert result.returncode == 0, result.stderr
    assert f"applied {HEAD}" in result.stdout
    assert f"locks held by {COMMENTS}: ShareUpdateExclusiveLock on checkpoints" in result.stdout
    assert "Rehearsal passed" in result.stdout
    assert runner.current_revisions(behind_db) == (WIDEN,)


def test_rehearse_without_a_backup(behind_db: DatabaseConfig, tmp_path: Path) -> None:
    result = run_cli(
        "inv", "db.rehearse", database=behind_db, env={"UAIP_BACKUP_DIR": str(tmp_path)}
    )
    assert result.returncode == 2 and "run `inv db.backup` first" in result.stderr


def test_release_check_writes_a_report_to_sign(
    behind_db: DatabaseConfig, tmp_path: Path, checkout: Path
) -> None:
    env = {"UAIP_BACKUP_DIR": str(tmp_path), "UAIP_DB_ROOT": str(checkout)}
    result = run_cli("inv", "release.check", database=behind_db, env=env)
    assert result.returncode == 0, result.stderr
    reports = list((checkout / "reports").glob("release-*.md"))
    assert len(reports) == 1
    report = reports[0].read_text()
    assert "Overall: **PASS**" in report
    assert f"1. `{COMMENTS}` Describe every table and column with comments" in report
    assert "COMMENT ON TABLE sessions IS" in report
    assert "sessions: ~ comments added on the table and 10 columns" in report
    assert "Files checked against the manifest (sha256), then restored" in report
    assert f"applied {HEAD}" in report and "verify and check: passed" in report
    assert "## 7. Rollback plan: PASS" in report and "COMMENT ON TABLE sessions IS NULL" in report
    assert "- [ ] Release manager" in report
    assert behind_db.password not in report
    assert runner.current_revisions(behind_db) == (WIDEN,)


def test_release_check_fails_when_the_rehearsal_fails(
    server: ScratchServer, behind_db: DatabaseConfig, tmp_path: Path, checkout: Path
) -> None:
    write_revision(
        checkout / "migrations" / "versions",
        "ba0000000001",
        HEAD,
        upgrade=["ALTER TABLE sessions ADD CONSTRAINT no_bad CHECK (project_name <> 'bad')"],
        downgrade=["ALTER TABLE sessions DROP CONSTRAINT no_bad"],
        doc="Forbid bad project names",
    )
    snapshots.write(snapshots.build(server))
    env = {"UAIP_BACKUP_DIR": str(tmp_path), "UAIP_DB_ROOT": str(checkout)}
    result = run_cli("inv", "release.check", database=behind_db, env=env)
    assert result.returncode == 1
    assert "6. Rehearsal: FAIL" in result.stdout
    report = next((checkout / "reports").glob("release-*.md")).read_text()
    assert "Overall: **FAIL**" in report
    assert "Revision ba0000000001 (Forbid bad project names) failed" in report
    assert "violated by some row" in report
    assert runner.current_revisions(behind_db) == (WIDEN,)


def test_rehearse_sees_the_locks_of_every_transaction_of_a_revision(
    empty_db: DatabaseConfig, tmp_path: Path
) -> None:
    runner.upgrade(empty_db, BASELINE_REVISION)
    env = {"UAIP_BACKUP_DIR": str(tmp_path)}
    assert run_cli("inv", "db.backup", database=empty_db, env=env).returncode == 0
    result = run_cli("inv", "db.rehearse", database=empty_db, env=env)
    assert result.returncode == 0, result.stderr
    # 8f2b6c1d4e7a adds a column in a transaction, then builds its index CONCURRENTLY outside it.
    assert f"locks held by {EMAIL}: AccessExclusiveLock on sessions" in result.stdout
    assert (
        "ALTER TABLE sessions ADD COLUMN IF NOT EXISTS email VARCHAR(255): "
        "AccessExclusiveLock on sessions"
    ) in result.stdout


def test_reports_written_in_the_same_second_never_overwrite(tmp_path: Path) -> None:
    from uaip_db.release import write_new

    first = write_new(tmp_path, "release-20261127T120000Z", "one")
    second = write_new(tmp_path, "release-20261127T120000Z", "two")
    assert first != second
    assert (first.read_text(), second.read_text()) == ("one", "two")
