"""Issue 24: code another role planted never runs as the role the tool connects as.

An attacker with CREATE on `public` (everyone's default before PostgreSQL 15) plants operators,
functions and aggregates with more exact argument types than pg_catalog's (tests/planted.py),
each recording who ran it and trying to make the attacker a superuser; or it creates the
migration ledger first, with a trigger. The tool connects as the test server's superuser here:
the worst case."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

import uaip_db
from tests.conftest import run_inv
from tests.planted import Attacker, attacker_in, is_superuser, ran
from uaip_db.migrations import runner
from uaip_db.migrations.ledger import LEDGER_TABLE
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig

BASELINE = "03033cebb647"


@pytest.fixture
def planted(server: ScratchServer) -> Iterator[tuple[DatabaseConfig, Attacker]]:
    """A database at the baseline (revisions pending), with the attacker's objects in public."""
    database = server.create_database()
    runner.upgrade(database, BASELINE)
    with attacker_in(server, database) as attacker:
        yield database, attacker


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_planted_operators_and_functions_never_run(
    server: ScratchServer, planted: tuple[DatabaseConfig, Attacker]
) -> None:
    database, attacker = planted
    # Reading where the database is needs no snapshot: it works, on a catalog-only search_path.
    status = run_inv("db.status", database=database)
    assert status.returncode == 0, status.stderr
    assert BASELINE in status.stdout
    # Everything that reads the schema with public on the search_path, or migrates, refuses in
    # one line naming a planted object and its owner.
    for args in (("db.check",), ("db.verify",), ("db.upgrade",), ("db.backup",)):
        result = run_inv(*args, database=database)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        line = one_line(result.stderr)
        assert "shadows PostgreSQL's own" in line and f"owner {attacker.role}" in line, line
        assert "Traceback" not in result.stderr
    with pytest.raises(uaip_db.CheckFailed, match=attacker.role):
        uaip_db.check_migrations(database)
    assert ran(database, attacker) == []
    assert not is_superuser(server, attacker)


def test_the_database_stays_usable_once_the_planted_objects_are_gone(
    planted: tuple[DatabaseConfig, Attacker],
) -> None:
    database, attacker = planted
    with psycopg.connect(**database.connect_kwargs(), autocommit=True) as conn:
        conn.execute("SET search_path = pg_catalog")  # every name read back qualified
        rows = conn.execute(
            "SELECT p.oid::regprocedure::text, p.prokind FROM pg_proc p "
            "WHERE p.pronamespace = 'public'::regnamespace AND p.proowner = %s::regrole",
            (attacker.role,),
        ).fetchall()
        operators = conn.execute(
            "SELECT oid::regoperator::text FROM pg_operator "
            "WHERE oprnamespace = 'public'::regnamespace"
        ).fetchall()
        drops = [f"DROP OPERATOR {name}" for (name,) in operators]
        drops += [
            f"DROP {'AGGREGATE' if kind == 'a' else 'FUNCTION'} {name}" for name, kind in rows
        ]
        # Tens of thousands of objects: a thousand statements a round trip (one transaction
        # for them all would run out of lock slots).
        for start in range(0, len(drops), 1000):
            conn.execute(";".join(drops[start : start + 1000]).encode())
        # Its CREATE on public is drift of its own (the schema's privileges): take it back too.
        conn.execute(
            sql.SQL("REVOKE CREATE ON SCHEMA public FROM {}").format(sql.Identifier(attacker.role))
        )
    result = run_inv("db.upgrade", database=database)
    assert result.returncode == 0, result.stderr
    check = run_inv("db.check", database=database)
    assert check.returncode == 0, check.stderr
    assert ran(database, attacker) == []


@pytest.fixture
def attacker(server: ScratchServer) -> Iterator[tuple[DatabaseConfig, Attacker]]:
    """A database at the baseline, and an attacker with CREATE on public who planted nothing."""
    database = server.create_database()
    runner.upgrade(database, BASELINE)
    with attacker_in(server, database, overloads=False) as planted:
        yield database, planted


def test_a_ledger_another_role_created_is_refused(
    server: ScratchServer, attacker: tuple[DatabaseConfig, Attacker]
) -> None:
    """The attacker's ledger, made before ours, with a trigger that records who writes to it."""
    database, planted = attacker
    role = sql.Identifier(planted.role)
    with psycopg.connect(**database.connect_kwargs(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE public.{}").format(sql.Identifier(LEDGER_TABLE)))
        conn.execute(sql.SQL("SET ROLE {}").format(role))
        conn.execute(
            sql.SQL(
                "CREATE TABLE public.{t} (revision varchar(64) PRIMARY KEY, file_sha256 char(64),"
                " applied_at timestamptz DEFAULT now(), applied_by text, duration_ms integer,"
                " how varchar(10));"
                "GRANT ALL ON public.{t} TO PUBLIC;"
                "CREATE FUNCTION attacker_s.fire() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM attacker_s.note(); RETURN NEW; END $$;"
                "CREATE TRIGGER audit BEFORE INSERT OR UPDATE OR DELETE ON public.{t} "
                "FOR EACH ROW EXECUTE FUNCTION attacker_s.fire()"
            ).format(t=sql.Identifier(LEDGER_TABLE))
        )
        conn.execute("RESET ROLE")
    result = run_inv("db.upgrade", database=database)
    assert result.returncode == 1, result.stdout + result.stderr
    line = one_line(result.stderr)
    assert f"table public.{LEDGER_TABLE} belongs to role {planted.role}" in line, line
    for args in (("db.check",), ("db.verify",)):
        refused = run_inv(*args, database=database)
        assert refused.returncode == 1, refused.stdout
        assert f"public.{LEDGER_TABLE} belongs to role {planted.role}" in one_line(refused.stderr)
    assert ran(database, planted) == []
    assert not is_superuser(server, planted)


def test_a_trigger_on_our_own_ledger_is_shown_and_refused(head_db: DatabaseConfig) -> None:
    """The bookkeeping tables are left out of the snapshot: db.check and db.verify name a
    trigger on them all the same (and a migration refuses to write to them: the ledger test)."""
    with psycopg.connect(**head_db.connect_kwargs(), autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION public.stamp_it() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RETURN NEW; END $$"
        )
        conn.execute(
            f"CREATE TRIGGER stamp_it BEFORE INSERT ON public.{LEDGER_TABLE} "
            "FOR EACH ROW EXECUTE FUNCTION public.stamp_it()"
        )
    for args in (("db.verify",), ("db.check",)):
        result = run_inv(*args, database=head_db)
        assert result.returncode == 1, (args, result.stdout)
        assert f"trigger stamp_it on public.{LEDGER_TABLE}" in one_line(result.stderr)
