"""db.check and check_migrations(): 0 at head, 3 pending, 1 when something is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

import uaip_db
from tests.conftest import CHAIN, HEAD, WIDEN, run_cli, run_inv, sql, write_revision
from uaip_db.checks.status import effective_settings
from uaip_db.migrations import applied, runner
from uaip_db.settings import SETTINGS, DatabaseConfig


def test_at_head_exits_0(head_db: DatabaseConfig) -> None:
    result = run_inv("db.check", database=head_db)
    assert result.returncode == 0, result.stderr
    assert f"is at head {HEAD}" in result.stdout
    assert uaip_db.check_migrations(head_db).exit_code == 0


def test_pending_exits_3_with_the_list(empty_db: DatabaseConfig) -> None:
    runner.upgrade(empty_db, "03033cebb647")
    result = run_inv("db.check", database=empty_db)
    assert result.returncode == 3
    assert f"{len(CHAIN) - 1} revision(s) pending" in result.stderr
    assert "8f2b6c1d4e7a Add sessions.email" in result.stderr
    with pytest.raises(uaip_db.PendingMigrations, match=HEAD):
        uaip_db.check_migrations(empty_db)


def test_json_output(empty_db: DatabaseConfig) -> None:
    result = run_inv("db.check", "--json", database=empty_db)
    assert result.returncode == 3
    report = json.loads(result.stdout)
    assert report["current"] == [] and report["heads"] == [HEAD] and report["exit_code"] == 3
    assert len(report["pending"]) == len(CHAIN)


def test_unknown_revision_in_the_database_exits_1(head_db: DatabaseConfig) -> None:
    sql(head_db, "UPDATE alembic_version SET version_num = 'feedface0000'")
    result = run_inv("db.check", database=head_db)
    assert result.returncode == 1
    assert "feedface0000, which these migration scripts do not know" in result.stderr
    with pytest.raises(uaip_db.CheckFailed, match="feedface0000"):
        uaip_db.check_migrations(head_db)


def test_two_heads_exit_1(head_db: DatabaseConfig, checkout: Path) -> None:
    versions = checkout / "migrations" / "versions"
    write_revision(versions, "aaaa00000001", WIDEN, ["SELECT 1"], ["SELECT 1"])
    result = run_inv("db.check", database=head_db, env={"UAIP_DB_ROOT": str(checkout)})
    assert result.returncode == 1
    assert f"2 heads ({', '.join(sorted(['aaaa00000001', HEAD]))})" in result.stderr


def test_an_empty_downgrade_without_a_marker_exits_1(
    head_db: DatabaseConfig, checkout: Path
) -> None:
    versions = checkout / "migrations" / "versions"
    write_revision(versions, "cccc00000003", HEAD, ["SELECT 1"], [], doc="Forgot the way back")
    result = run_inv("db.check", database=head_db, env={"UAIP_DB_ROOT": str(checkout)})
    assert result.returncode == 1
    assert "cccc00000003 (Forgot the way back): downgrade() does nothing" in result.stderr


def test_an_irreversible_marker_is_accepted(head_db: DatabaseConfig, checkout: Path) -> None:
    versions = checkout / "migrations" / "versions"
    write_revision(
        versions, "dddd00000004", HEAD, ["SELECT 1"], [], markers='irreversible = "data fix"'
    )
    result = run_inv("db.check", database=head_db, env={"UAIP_DB_ROOT": str(checkout)})
    assert result.returncode == 3, result.stderr
    assert "dddd00000004" in result.stderr


def test_an_applied_migration_edited_afterwards_exits_1(
    empty_db: DatabaseConfig, checkout: Path
) -> None:
    env = {"UAIP_DB_ROOT": str(checkout)}
    assert run_inv("db.upgrade", database=empty_db, env=env).returncode == 0
    script = next((checkout / "migrations" / "versions").glob("*_widen_sessions_user_id.py"))
    script.write_text(script.read_text() + "\n# a quiet edit\n")
    result = run_inv("db.check", database=empty_db, env=env)
    assert result.returncode == 1
    assert "b41d9e0c7f25 (Widen sessions.user_id to 500 characters) was edited after it was" in (
        result.stderr
    )
    verify = run_inv("db.verify", database=empty_db, env=env)
    assert verify.returncode == 1 and "was edited after it was applied" in verify.stderr


def test_an_edited_applied_revision_is_told_both_ways_and_the_unpushed_way_works(
    empty_db: DatabaseConfig, checkout: Path
) -> None:
    """docs/MIGRATIONS.md: pushed, revert the edit; not pushed, downgrade to the parent and
    upgrade again, which records the file anew (issue 25)."""
    env = {"UAIP_DB_ROOT": str(checkout)}
    assert run_inv("db.upgrade", database=empty_db, env=env).returncode == 0
    script = next((checkout / "migrations" / "versions").glob("*_widen_sessions_user_id.py"))
    script.write_text(script.read_text().replace('"', "'"))  # what a formatter might do
    result = run_inv("db.check", database=empty_db, env=env)
    assert result.returncode == 1
    parent = CHAIN[CHAIN.index(WIDEN) - 1]
    advice = f"`inv db.downgrade --rev {parent} && inv db.upgrade` records it anew"
    assert "if it was pushed, revert the edit" in result.stderr and advice in result.stderr
    down = run_inv("db.downgrade", "--rev", parent, "--yes", database=empty_db, env=env)
    assert down.returncode == 0, down.stderr
    assert run_inv("db.upgrade", database=empty_db, env=env).returncode == 0
    again = run_inv("db.check", database=empty_db, env=env)
    assert "was edited after it was applied" not in again.stderr, again.stderr


def test_a_database_stamped_head_by_hand_is_not_at_head(empty_db: DatabaseConfig) -> None:
    from uaip_db.migrations.baseline import seed

    seed(empty_db)  # schema v1.0.0, then the wrong stamp the README warns about
    stamped = run_cli("alembic", "stamp", "head", database=empty_db)
    assert stamped.returncode == 0, stamped.stderr
    result = run_inv("db.check", database=empty_db)
    assert result.returncode == 1
    assert f"The schema is not revision {HEAD}'s" in result.stderr
    assert "inv db.verify" in result.stderr
    with pytest.raises(uaip_db.CheckFailed, match="is not revision"):
        uaip_db.check_migrations(empty_db)


def test_an_invalid_index_fails_the_check(head_db: DatabaseConfig) -> None:
    # A table of the test's own (no column of the UAIP schema is assumed): the duplicate
    # leaves the unique index behind, INVALID.
    sql(head_db, "CREATE TABLE zz_half (v integer); INSERT INTO zz_half VALUES (1), (1)")
    with (
        psycopg.connect(**head_db.connect_kwargs(), autocommit=True) as conn,
        pytest.raises(psycopg.errors.UniqueViolation),
    ):
        conn.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_half_built ON zz_half (v)")
    result = run_inv("db.check", database=head_db)
    assert result.returncode == 1
    assert "Index idx_half_built is INVALID" in result.stderr
    with pytest.raises(uaip_db.CheckFailed, match="INVALID"):
        uaip_db.check_migrations(head_db)


def test_stale_snapshots_are_one_line_naming_the_revision(
    head_db: DatabaseConfig, checkout: Path
) -> None:
    versions = checkout / "migrations" / "versions"
    path = next(versions.glob(f"*{WIDEN}*.py"))
    path.write_text(path.read_text() + "\n# reviewed\n")
    env = {"UAIP_DB_ROOT": str(checkout)}
    wanted = f"migrations/snapshots/ was generated before revision {WIDEN} "
    for task in ("db.check", "db.verify", "db.lint"):
        result = run_inv(task, database=head_db, env=env)
        assert result.returncode == 1, (task, result.stdout)
        assert wanted in result.stderr and "run `inv db.snapshots`" in result.stderr, task
        assert "does not match" not in result.stderr, task


def test_check_migrations_raises_an_exported_error_when_the_database_is_down() -> None:
    from uaip_db.servers.scratch import free_port

    nowhere = DatabaseConfig(host="127.0.0.1", port=free_port(), password="x")
    with pytest.raises(uaip_db.ConnectionProblem, match="No PostgreSQL server answers"):
        uaip_db.check_migrations(nowhere)
    assert issubclass(uaip_db.ConnectionProblem, uaip_db.UaipDbError)


def test_a_database_built_from_init_sql_is_told_to_stamp(empty_db: DatabaseConfig) -> None:
    from uaip_db.migrations.baseline import seed

    seed(empty_db)
    result = run_inv("db.check", database=empty_db)
    assert result.returncode == 1
    assert "inv db.stamp --rev auto" in result.stderr


def test_upgrade_of_a_database_at_an_unknown_revision(head_db: DatabaseConfig) -> None:
    sql(head_db, "UPDATE alembic_version SET version_num = 'f0546d4a3b98'")
    result = run_inv("db.upgrade", database=head_db)
    assert result.returncode == 1
    assert "which these migration scripts do not know" in result.stderr


def test_stamp_auto_refuses_stale_snapshots(empty_db: DatabaseConfig, checkout: Path) -> None:
    runner.upgrade(empty_db, "head")
    sql(empty_db, "DELETE FROM alembic_version")
    path = next((checkout / "migrations" / "versions").glob(f"*{WIDEN}*.py"))
    path.write_text(path.read_text() + "\n# reviewed\n")
    result = run_inv(
        "db.stamp", "--rev", "auto", database=empty_db, env={"UAIP_DB_ROOT": str(checkout)}
    )
    assert result.returncode == 1
    assert "run `inv db.snapshots`" in result.stderr
    assert applied.current_revisions(empty_db) == ()


def test_a_new_revision_with_two_heads_is_one_line(checkout: Path) -> None:
    write_revision(
        checkout / "migrations" / "versions", "aaaa00000009", WIDEN, ["SELECT 1"], ["SELECT 1"]
    )
    result = run_inv("db.revision", "-m", "c", env={"UAIP_DB_ROOT": str(checkout)})
    assert result.returncode == 1
    assert "heads" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- db.status: every setting in effect, and where it came from ---------------------------------


def test_effective_settings_say_where_each_came_from(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("DB_PORT=6543\nDB_PASSWORD=from-dotenv-secret\n")
    environ = {
        "DB_HOST": "db.example",
        "UAIP_LOCK_BUDGET": "soon",
        "UAIP_SCRATCH_URL": "postgresql://admin:scratch-secret@h:6000/postgres",
        "UAIP_PG_VERSION": "17",
    }
    listed = {item.name: item for item in effective_settings(environ, dotenv)}
    assert list(listed) == [setting.name for setting in SETTINGS]
    assert (listed["DB_HOST"].value, listed["DB_HOST"].source) == ("db.example", "environment")
    assert (listed["DB_PORT"].value, listed["DB_PORT"].source) == ("6543", ".env")
    assert (listed["DB_NAME"].value, listed["DB_NAME"].source) == ("uaip_scoping", "default")
    assert (listed["UAIP_PG_VERSION"].value, listed["UAIP_PG_VERSION"].problem) == ("17", None)
    assert listed["UAIP_LOCK_WAIT"].is_default and listed["UAIP_LOCK_WAIT"].value == "60"
    budget = listed["UAIP_LOCK_BUDGET"]
    assert budget.problem and budget.problem.startswith("UAIP_LOCK_BUDGET='soon' is not")
    assert budget.summary() == f"UAIP_LOCK_BUDGET=soon (environment); refused: {budget.problem}"
    assert listed["DB_PASSWORD"].value == "***" and listed["DB_PASSWORD"].source == ".env"
    assert listed["UAIP_SCRATCH_URL"].value == "postgresql://admin:***@h:6000/postgres"
    shown = json.dumps([item.to_json() for item in listed.values()])
    assert "secret" not in shown and "changeme" not in shown


def test_database_url_is_shown_without_its_password_and_overrides_the_five(tmp_path: Path) -> None:
    environ = {"DATABASE_URL": "postgresql://app:url-secret@db:5433/app", "DB_PASSWORD": ""}
    listed = {item.name: item for item in effective_settings(environ, tmp_path / "none.env")}
    assert listed["DATABASE_URL"].value == "postgresql://app:***@db:5433/app"
    assert listed["DB_PASSWORD"].value == "(empty)"
    assert listed["DB_HOST"].note == "not used: DATABASE_URL is set"
    assert listed["DB_ENV"].note is None
    broken = effective_settings({"DATABASE_URL": "mysql://app:url-secret@db/app"}, None)
    url = next(item for item in broken if item.name == "DATABASE_URL")
    assert url.value == "(not a PostgreSQL URL)" and url.problem
    assert "url-secret" not in json.dumps([item.to_json() for item in broken])


def test_defaults_are_listed_as_text_not_markdown() -> None:
    """`db.status --json` gave `"`backups/`"` for an unset UAIP_BACKUP_DIR: the docs' Markdown."""
    listed = effective_settings(environ={})
    assert listed and not [s.name for s in listed if "`" in s.value]
