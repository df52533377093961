"""Throwaway databases: held while their run lives, swept once it is gone, never otherwise."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from tests.conftest import CHAIN, run_inv
from tests.servers.roles import limited_role, url
from uaip_db import pg
from uaip_db.backups import manifest as manifests
from uaip_db.backups import throwaway
from uaip_db.errors import CheckFailed
from uaip_db.migrations import applied, runner
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig


def names(server: ScratchServer) -> set[str]:
    rows = server.connection().execute("SELECT datname FROM pg_database").fetchall()
    return {str(row[0]) for row in rows}


def test_only_the_throwaway_databases_of_stopped_runs_are_swept(server: ScratchServer) -> None:
    admin = server.connection()
    dead = ["uaip_verify_999999_dead01", "uaip_rehearsal_999999_dead02", "uaip_verify_1a2b3c4d"]
    for name in [*dead, "uaip_verify_999999_live", "uaip_verify_999999_busy", "uaip_verifyx"]:
        pg.create_database(admin, name)
    holder = pg.connect(server.admin.with_database(pg.MAINTENANCE_DATABASE))
    visitor = pg.connect(server.config_for("uaip_verify_999999_busy"))
    try:
        holder.execute(
            "SELECT pg_advisory_lock(%s::int, hashtext(%s))",
            (throwaway.LOCK_CLASS, "uaip_verify_999999_live"),
        )
        swept = throwaway.sweep(server)
        assert set(dead) <= set(swept) and swept == sorted(swept)
        assert not {"uaip_verify_999999_live", "uaip_verify_999999_busy"} & set(swept)
        left = names(server)
        assert not set(dead) & left
        assert {"uaip_verify_999999_live", "uaip_verify_999999_busy", "uaip_verifyx"} <= left
    finally:
        holder.close()
        visitor.close()
    deadline = time.monotonic() + 30
    while admin.execute(throwaway.SESSIONS_QUERY, ("uaip_verify_999999_busy",)).fetchone() != (0,):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert {"uaip_verify_999999_live", "uaip_verify_999999_busy"} <= set(throwaway.sweep(server))
    server.drop_database("uaip_verifyx")


def test_a_throwaway_database_is_held_while_it_lives_and_dropped_after(
    server: ScratchServer,
) -> None:
    with throwaway.throwaway_database(server, throwaway.VERIFY_PREFIX) as target:
        assert target.name.startswith(f"uaip_verify_{os.getpid()}_")
        pg.create_database(server.connection(), target.name)
        assert throwaway.sweep(server) == []  # another run sweeping now leaves it alone
        assert target.name in names(server)
    assert target.name not in names(server)


# --- least privilege: where throwaway databases are made ----------------------------------------


@pytest.fixture
def behind_head(server: ScratchServer) -> Iterator[DatabaseConfig]:
    """A database one revision behind head, owned by a role that may not create databases
    (NOSUPERUSER NOCREATEDB, as managed PostgreSQL gives a migration role)."""
    with limited_role(server) as role:
        database = server.create_database("uaip_priv")
        server.connection().execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(database.name), sql.Identifier(role.user)
            )
        )
        config = role.with_database(database.name)
        runner.upgrade(config, CHAIN[-2])
        yield config
        server.drop_database(database.name)


def one_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert result.returncode == status, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


def backups_in(directory: Path) -> list[Path]:
    """The backup folders (not the folder's lock and ledger files)."""
    if not directory.is_dir():
        return []
    return [path for path in directory.iterdir() if path.is_dir()]


PLACES_THAT_CANNOT = [{"UAIP_SCRATCH": "env"}, {"UAIP_TEST_SERVER": "env"}]


@pytest.mark.parametrize("place", PLACES_THAT_CANNOT, ids=["UAIP_SCRATCH", "UAIP_TEST_SERVER"])
def test_a_production_upgrade_without_a_place_for_its_backup_check_names_the_setting(
    behind_head: DatabaseConfig, tmp_path: Path, place: dict[str, str]
) -> None:
    env = {"DB_ENV": "production", "UAIP_BACKUP_DIR": str(tmp_path), **place}
    result = run_inv("db.upgrade", database=behind_head, env=env)
    said = one_line(result, 2)
    assert "UAIP_SCRATCH_URL" in said and f"{behind_head.user} may not create databases" in said
    assert behind_head.name not in said and behind_head.password not in result.stdout + said
    assert applied.current_revisions(behind_head) == (CHAIN[-2],)
    assert backups_in(tmp_path) == []  # no backup written that could not be checked


@pytest.mark.parametrize(
    "task",
    [
        ["db.roundtrip"],
        ["db.snapshots", "--check"],
        ["db.docs", "--check"],
        ["db.backup"],
        ["release.check"],
    ],
    ids=lambda task: task[0],
)
def test_every_task_that_needs_a_throwaway_database_names_the_setting_not_the_database(
    behind_head: DatabaseConfig, tmp_path: Path, task: list[str]
) -> None:
    env = {"UAIP_BACKUP_DIR": str(tmp_path), "UAIP_SCRATCH": "env"}
    said = one_line(run_inv(*task, database=behind_head, env=env), 2)
    assert "UAIP_SCRATCH_URL" in said and "UAIP_SCRATCH=local" in said
    assert behind_head.name not in said and "permission denied" not in said
    assert backups_in(tmp_path) == []


def test_a_rehearsal_without_a_place_names_the_setting(
    behind_head: DatabaseConfig, tmp_path: Path
) -> None:
    env = {"UAIP_BACKUP_DIR": str(tmp_path)}
    made = run_inv("db.backup", "--no-verify", database=behind_head, env=env)
    assert made.returncode == 0, made.stderr
    env["UAIP_SCRATCH"] = "env"
    said = one_line(run_inv("db.rehearse", database=behind_head, env=env), 2)
    assert "UAIP_SCRATCH_URL" in said and behind_head.name not in said
    assert applied.current_revisions(behind_head) == (CHAIN[-2],)


def test_an_admin_connection_in_uaip_scratch_url_lets_a_production_upgrade_back_up_first(
    server: ScratchServer, behind_head: DatabaseConfig, tmp_path: Path
) -> None:
    admin = server.admin.with_database(pg.MAINTENANCE_DATABASE)
    # UAIP_TEST_SERVER=env alone would use the settings' role, which may not create databases.
    env = {
        "DB_ENV": "production",
        "UAIP_BACKUP_DIR": str(tmp_path),
        "UAIP_SCRATCH_URL": url(admin),
        "UAIP_TEST_SERVER": "env",
    }
    result = run_inv("db.upgrade", database=behind_head, env=env)
    assert result.returncode == 0, result.stderr
    assert "proven restorable" in result.stdout
    assert admin.password not in result.stdout + result.stderr
    assert applied.current_revisions(behind_head) == (CHAIN[-1],)
    (backup,) = backups_in(tmp_path)
    assert manifests.check_files(backup).state == manifests.VERIFIED
    assert not [name for name in names(server) if name.startswith(throwaway.VERIFY_PREFIX)]


def test_an_admin_connection_that_may_not_create_databases_is_named(
    server: ScratchServer, behind_head: DatabaseConfig, tmp_path: Path
) -> None:
    env = {"UAIP_BACKUP_DIR": str(tmp_path), "UAIP_SCRATCH_URL": url(behind_head)}
    said = one_line(run_inv("db.roundtrip", database=behind_head, env=env), 2)
    assert "chosen by UAIP_SCRATCH_URL" in said and "may not create databases" in said


def test_a_backup_whose_restore_check_fails_after_it_was_written_is_kept_and_said(
    server: ScratchServer, behind_head: DatabaseConfig, tmp_path: Path
) -> None:
    # The admin may create databases but hold one connection only: the check passes, the
    # restore check's second connection is refused after the dump was written.
    with limited_role(server, "CREATEDB CONNECTION LIMIT 1") as admin:
        env = {"UAIP_BACKUP_DIR": str(tmp_path), "UAIP_SCRATCH_URL": url(admin)}
        result = run_inv("db.backup", database=behind_head, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    (backup,) = backups_in(tmp_path)
    assert manifests.read_manifest(backup).state == manifests.WRITTEN
    assert f"The backup {backup} stays on disk, not verified" in result.stderr


def test_a_failure_inside_is_not_hidden_by_a_drop_that_cannot_run(server: ScratchServer) -> None:
    # A server that turned read-only: the DROP DATABASE after the failure fails as well, and
    # the person must still read why the check failed, not "cannot execute DROP DATABASE".
    with limited_role(server, "CREATEDB") as admin:
        server.connection().execute(
            sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(
                sql.Identifier(admin.user)
            )
        )
        read_only = ScratchServer(admin)
        try:
            with (
                pytest.raises(CheckFailed, match="the restore failed"),
                throwaway.throwaway_database(read_only, throwaway.VERIFY_PREFIX),
            ):
                raise CheckFailed("the restore failed")
        finally:
            read_only.close()
