"""Every session the tool opens sets what it parses (settings.SESSION_SETTINGS), whatever the
database or role sets: a DateStyle other than ISO used to crash db.check, db.verify and
check_migrations() with a traceback (issue 24, item 21)."""

from __future__ import annotations

import pytest
from psycopg import sql as pgsql

import uaip_db
from tests.conftest import HEAD, run_cli, run_inv, sql
from uaip_db import pg
from uaip_db.migrations import runner
from uaip_db.settings import DatabaseConfig

STYLES = ["SQL, DMY", "German", "Postgres"]


def set_for_database(database: DatabaseConfig, setting: str, value: str) -> None:
    sql(
        database,
        pgsql.SQL("ALTER DATABASE {} SET {} = {}")
        .format(pgsql.Identifier(database.name), pgsql.Identifier(setting), pgsql.Literal(value))
        .as_string(None),
    )


@pytest.mark.parametrize("style", STYLES)
def test_checks_read_a_database_whose_datestyle_is_not_iso(
    head_db: DatabaseConfig, style: str
) -> None:
    set_for_database(head_db, "DateStyle", style)
    check = run_inv("db.check", database=head_db)
    assert check.returncode == 0, check.stderr
    assert f"is at head {HEAD}" in check.stdout
    verify = run_inv("db.verify", database=head_db)
    assert verify.returncode == 0, verify.stderr
    assert "matches revision" in verify.stdout
    assert uaip_db.check_migrations(head_db).exit_code == 0


def test_every_kind_of_session_sets_what_the_tool_parses(head_db: DatabaseConfig) -> None:
    for setting, value in (
        ("DateStyle", "German, DMY"),
        ("IntervalStyle", "iso_8601"),
        ("extra_float_digits", "-15"),
        ("search_path", "nowhere"),
    ):
        set_for_database(head_db, setting, value)
    wanted = ("ISO, YMD", "postgres", "3", "public")
    query = (
        "SELECT current_setting('DateStyle'), current_setting('IntervalStyle'), "
        "current_setting('extra_float_digits'), current_setting('search_path')"
    )
    with pg.connection(head_db) as conn:
        assert conn.execute(query).fetchone() == wanted
    with runner.make_engine(head_db).connect() as conn:
        assert tuple(conn.exec_driver_sql(query).one()) == wanted
    psql = run_cli("inv", "db.psql", "--command", query, database=head_db)
    assert psql.returncode == 0, psql.stderr
    assert [cell.strip() for cell in psql.stdout.splitlines()[2].split("|")] == list(wanted)
