"""The `inv` program itself, in child processes: each task group (db, fleet, release) and each
exit status reaches the person. The other tests run the same command lines in their own process
(`run_inv`), which proves what a task does but not that the installed `inv` finds tasks.py and
ends with the status the task chose; these do, one child each. Ctrl-C (130) is
tests/cli/test_bad_input.py's test_ctrl_c_during_a_concurrent_index_build, a child too. The last
test holds `run_inv` to the child's answers (status, stdout, stderr) for the same command lines."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import CHAIN, HEAD, WIDEN, run_cli, run_inv, sql
from tests.fleet.conftest import PASSWORD_VARIABLE, targets_text
from uaip_db.migrations import applied, runner
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_db_exits_3_while_revisions_are_pending_then_0_once_upgraded(
    empty_db: DatabaseConfig,
) -> None:
    runner.upgrade(empty_db, WIDEN)
    pending = run_cli("inv", "db.check", database=empty_db)
    assert pending.returncode == 3, pending.stdout + pending.stderr
    assert f"{len(CHAIN) - CHAIN.index(WIDEN) - 1} revision(s) pending" in pending.stderr
    upgraded = run_cli("inv", "db.upgrade", database=empty_db)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"Now at {HEAD}" in upgraded.stdout
    assert run_cli("inv", "db.check", database=empty_db).returncode == 0


def test_db_exits_2_on_a_usage_mistake_in_one_line(head_db: DatabaseConfig) -> None:
    result = run_cli("inv", "db.upgrade", "--rev", "deadbeef", database=head_db)
    assert result.returncode == 2
    assert one_line(result.stderr) == "Unknown revision 'deadbeef'; `inv db.history` lists them."
    assert result.stdout == ""


def test_db_exits_1_when_a_check_finds_something(head_db: DatabaseConfig) -> None:
    sql(head_db, "CREATE TABLE hand_made (id int)")
    result = run_cli("inv", "db.verify", database=head_db)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "hand_made" in result.stderr and "Traceback" not in result.stderr
    assert head_db.password not in result.stdout + result.stderr


def test_fleet_exits_3_naming_the_target_with_pending_revisions(
    server: ScratchServer, head_template: str, tmp_path: Path
) -> None:
    databases = {
        name: server.create_database("uaip_fleet", template=head_template)
        for name in ("tenant-00", "tenant-01")
    }
    try:
        runner.downgrade(databases["tenant-00"], WIDEN)
        targets = tmp_path / "targets.toml"
        targets.write_text(targets_text(databases, server.admin), encoding="utf-8")
        env = {PASSWORD_VARIABLE: server.admin.password}
        result = run_cli("inv", "fleet.check", "--targets", str(targets), env=env)
    finally:
        for database in databases.values():
            server.drop_database(database.name)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "have pending revisions: tenant-00." in result.stderr


def test_release_exits_2_on_a_bad_setting_before_touching_anything(
    head_db: DatabaseConfig, tmp_path: Path
) -> None:
    runner.downgrade(head_db, WIDEN)
    env = {"UAIP_BACKUP_DIR": str(tmp_path), "UAIP_RELEASE_BACKUPS_KEPT": "0"}
    result = run_cli("inv", "release.check", database=head_db, env=env)
    assert result.returncode == 2
    assert "UAIP_RELEASE_BACKUPS_KEPT='0' is not a whole number of 1 or more" in one_line(
        result.stderr
    )
    assert applied.current_revisions(head_db) == (WIDEN,)
    assert list(tmp_path.iterdir()) == []


def test_run_inv_answers_as_the_child_does(head_db: DatabaseConfig) -> None:
    """The in-process runner the other tests use: same status, same stdout and stderr."""
    runner.downgrade(head_db, WIDEN)
    for args in (
        ["--list"],
        ["db.check"],
        ["db.upgrade", "--rev", "deadbeef"],
        ["db.upgrad"],
        ["db.history", "--json"],
        ["db.downgrade", "--rev", "base"],
    ):
        child = run_cli("inv", *args, database=head_db)
        inside = run_inv(*args, database=head_db)
        assert (inside.returncode, inside.stdout, inside.stderr) == (
            child.returncode,
            child.stdout,
            child.stderr,
        ), args
    assert applied.current_revisions(head_db) == (WIDEN,)
