"""Connection failures in plain words; no password in any of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import HEAD, run_inv, sql
from uaip_db.pg import explain, scrub
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig

CONFIG = DatabaseConfig(host="db.example", port=5433, name="scoping", password="s3cret!")


@pytest.mark.parametrize(
    ("driver_message", "expected"),
    [
        ('FATAL:  password authentication failed for user "uaip_user"', "the password was refused"),
        ('FATAL:  database "scoping" does not exist', "does not exist. Create it"),
        ('FATAL:  role "bob" does not exist', "The role 'uaip_user' does not exist"),
        ('could not translate host name "db.example" to address', "Unknown host 'db.example'"),
        ("connection refused", "No PostgreSQL server answers at db.example:5433"),
        ("something odd with s3cret! inside", "Cannot use database 'scoping'"),
    ],
)
def test_each_failure_says_what_to_do(driver_message: str, expected: str) -> None:
    message = str(explain(Exception(driver_message), CONFIG))
    assert expected in message
    assert "s3cret!" not in message


@pytest.mark.parametrize(
    ("driver_message", "expected"),
    [
        ('FATAL:  password authentication failed for user "uaip_user"', "the password was refused"),
        ('FATAL:  database "scoping" does not exist', "database 'scoping' does not exist"),
        ("connection refused", "no PostgreSQL server answers there"),
        ("something odd with s3cret! inside", "something odd with *** inside"),
    ],
)
def test_a_connection_a_setting_names_blames_that_setting_in_plain_words(
    driver_message: str, expected: str
) -> None:
    message = str(explain(Exception(driver_message), CONFIG, "target 'a' (line 3)"))
    assert message == (
        "Cannot connect to db.example:5433 as uaip_user, which target 'a' (line 3) names: "
        f"{expected}. Fix target 'a' (line 3)."
    )


def test_scrub_hides_passwords_in_urls_and_text() -> None:
    assert scrub("postgresql://u:pw@h/db and s3cret!", CONFIG) == "postgresql://u:***@h/db and ***"


def hostile_libpq_environment(server: ScratchServer, tmp_path: Path, victim: str) -> dict[str, str]:
    """What a caller's shell may carry: a service naming another database, another host
    address, options moving search_path, a default database."""
    services = tmp_path / "pg_service.conf"
    services.write_text(
        f"[victim]\nhost={server.admin.host}\nport={server.admin.port}\ndbname={victim}\n"
    )
    return {
        "PGSERVICEFILE": str(services),
        "PGSERVICE": "victim",
        "PGHOSTADDR": "127.0.0.2",
        "PGOPTIONS": "-c search_path=evil",
        "PGDATABASE": victim,
    }


def test_the_callers_libpq_variables_never_redirect_a_command(
    server: ScratchServer, empty_db: DatabaseConfig, tmp_path: Path
) -> None:
    victim = server.create_database("uaip_victim")
    try:
        env = hostile_libpq_environment(server, tmp_path, victim.name)
        upgraded = run_inv("db.upgrade", database=empty_db, env=env)
        assert upgraded.returncode == 0, upgraded.stderr
        checked = run_inv("db.check", database=empty_db, env=env)
        assert checked.returncode == 0, checked.stderr
        assert f"is at head {HEAD}" in checked.stdout
        backup = run_inv(
            "db.backup", "--out", str(tmp_path), "--no-verify", database=empty_db, env=env
        )
        assert backup.returncode == 0, backup.stderr
        manifest = json.loads(next(tmp_path.glob("*/manifest.json")).read_text())
        assert manifest["database"] == empty_db.name
        assert sql(victim, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
    finally:
        server.drop_database(victim.name)


def test_a_schema_named_after_the_role_does_not_capture_the_migrations(
    server: ScratchServer, empty_db: DatabaseConfig
) -> None:
    sql(empty_db, f'CREATE SCHEMA "{empty_db.user}"')
    sql(empty_db, f'ALTER DATABASE "{empty_db.name}" SET search_path = "$user", evil, public')
    result = run_inv("db.upgrade", database=empty_db)
    assert result.returncode == 0, result.stderr
    in_role_schema = sql(
        empty_db, "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (empty_db.user,)
    )
    assert in_role_schema == [(0,)]
    assert sql(empty_db, "SELECT to_regclass('public.sessions') IS NOT NULL") == [(True,)]
    downgraded = run_inv("db.downgrade", "--rev", "base", "--yes", database=empty_db)
    assert downgraded.returncode == 0, downgraded.stderr
    assert sql(empty_db, "SELECT to_regclass('public.sessions')") == [(None,)]


def test_a_connection_made_through_a_setting_blames_that_setting() -> None:
    from uaip_db import pg
    from uaip_db.errors import ConnectionProblem
    from uaip_db.servers.scratch import free_port, scratch_place

    port = free_port()
    place = scratch_place({"UAIP_SCRATCH_URL": f"postgresql://admin:pw@127.0.0.1:{port}/postgres"})
    assert place.admin is not None
    # A throwaway database on that server, whose connection fails after the setting was checked.
    with pytest.raises(ConnectionProblem) as failed:
        pg.connect(place.admin.with_database("uaip_rehearsal_1"))
    said = str(failed.value)
    assert "UAIP_SCRATCH_URL" in said and "DB_HOST" not in said and "pw" not in said


# --- the server's words depend on its lc_messages; its SQLSTATEs do not --------------------------


@pytest.mark.parametrize(
    ("raised", "code", "expected"),
    [
        # What a server with lc_messages = 'de_DE.UTF-8' says, with the codes it sends.
        (
            "Passwort-Authentifizierung für Benutzer »uaip_user« fehlgeschlagen",
            "invalid_password",
            "the password was refused",
        ),
        (
            "Datenbank »scoping« existiert nicht",
            "invalid_catalog_name",
            "does not exist. Create it",
        ),
        # English words under another code are not that failure.
        ('database "ghost" does not exist', "P0001", "Cannot use database"),
        ('password authentication failed for user "x"', "P0001", "Cannot use database"),
    ],
)
def test_a_server_error_is_told_by_its_sqlstate_not_its_words(
    head_db: DatabaseConfig, raised: str, code: str, expected: str
) -> None:
    import psycopg

    from uaip_db import pg

    statement = psycopg.sql.SQL(
        "DO $$ BEGIN RAISE EXCEPTION USING MESSAGE = {}, ERRCODE = {}; END $$"
    ).format(psycopg.sql.Literal(raised), psycopg.sql.Literal(code))
    with pg.connection(head_db) as conn, pytest.raises(psycopg.Error) as failed:
        conn.execute(statement)
    assert failed.value.sqlstate is not None
    said = str(explain(failed.value, head_db))
    assert expected in said, said
