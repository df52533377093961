"""What only a superuser can restore is named in the manifest, and a restore by a role that is
not one is refused before anything is created (issue 24 item 13)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.backups.conftest import exists
from tests.conftest import run_inv, sql
from tests.servers.roles import limited_role
from uaip_db.backups import manifest as manifests
from uaip_db.backups.dump import create_backup
from uaip_db.backups.restore import restore_backup
from uaip_db.errors import PrivilegeMissing
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig

EVENT_TRIGGER = "uaip_note_ddl"
EVENT_TRIGGER_SQL = f"""
CREATE FUNCTION public.note_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$BEGIN END$$;
CREATE EVENT TRIGGER {EVENT_TRIGGER} ON ddl_command_end EXECUTE FUNCTION public.note_ddl();
"""
NOTE = f"restorable by a superuser only: event trigger {EVENT_TRIGGER}"


@pytest.fixture
def with_event_trigger(head_db: DatabaseConfig) -> DatabaseConfig:
    """`head_db` with an event trigger its superuser made (only a superuser can make one)."""
    sql(head_db, EVENT_TRIGGER_SQL)
    return head_db


def test_a_role_that_is_not_a_superuser_is_refused_before_anything_is_created(
    server: ScratchServer, with_event_trigger: DatabaseConfig, backups: Path
) -> None:
    made = create_backup(with_event_trigger, backups)
    with limited_role(server, "CREATEDB") as role:
        target = role.with_database(f"uaip_restored_{os.urandom(4).hex()}")
        with pytest.raises(PrivilegeMissing) as refused:
            restore_backup(made.path, target)
        message = str(refused.value)
        assert f"event trigger {EVENT_TRIGGER}" in message and role.user in message
        assert "\n" not in message and role.password not in message
        assert not exists(server, target.name)
    assert made.manifest.superuser_only == (f"event trigger {EVENT_TRIGGER}",)
    assert made.manifest.dumped_by_superuser is True
    again = manifests.read_manifest(made.path)
    assert again.superuser_only == made.manifest.superuser_only
    assert again.dumped_by_superuser is True


def test_a_superuser_restores_it_and_plain_backups_list_nothing(
    server: ScratchServer,
    with_event_trigger: DatabaseConfig,
    head_template: str,
    new_target: DatabaseConfig,
    backups: Path,
) -> None:
    made = create_backup(with_event_trigger, backups)
    assert restore_backup(made.path, new_target).verified  # the server's superuser restores it
    assert sql(new_target, "SELECT evtname FROM pg_event_trigger") == [(EVENT_TRIGGER,)]
    plain = create_backup(server.config_for(head_template), backups)
    assert plain.manifest.superuser_only == ()


def test_untrusted_functions_and_extensions_are_named(
    head_db: DatabaseConfig, backups: Path
) -> None:
    sql(
        head_db,
        "CREATE FUNCTION public.raw_uuid() RETURNS uuid LANGUAGE c "
        "AS '$libdir/uuid-ossp', 'uuid_generate_v4'; CREATE EXTENSION file_fdw",
    )
    made = create_backup(head_db, backups)
    assert made.manifest.superuser_only == (
        "extension file_fdw",
        "function public.raw_uuid() (language c)",
    )


def test_db_backup_db_backups_and_db_restore_say_so(
    server: ScratchServer, with_event_trigger: DatabaseConfig, tmp_path: Path
) -> None:
    env = {"UAIP_BACKUP_DIR": str(tmp_path)}
    made = run_inv("db.backup", database=with_event_trigger, env=env)
    assert made.returncode == 0, made.stderr
    assert NOTE in made.stdout and "proven restorable by a superuser" in made.stdout
    listed = run_inv("db.backups", database=with_event_trigger, env=env)
    assert listed.returncode == 0, listed.stderr
    assert NOTE in listed.stdout
    path = next(p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    with limited_role(server, "CREATEDB") as role:
        before = sql(server.admin, "SELECT count(*) FROM pg_database")
        refused = run_inv("db.restore", str(path), database=role, env=env)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and f"event trigger {EVENT_TRIGGER}" in lines[0], refused.stderr
        assert "Traceback" not in refused.stderr and role.password not in refused.stderr
        assert sql(server.admin, "SELECT count(*) FROM pg_database") == before
