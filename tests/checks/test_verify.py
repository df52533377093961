"""db.verify names drift; db.stamp checks the schema before recording a revision."""

from __future__ import annotations

import json

import pytest

from tests.conftest import HEAD, WIDEN, run_inv, sql
from uaip_db.catalog import expected
from uaip_db.catalog.snapshot import take
from uaip_db.migrations import applied, snapshots
from uaip_db.migrations.baseline import seed
from uaip_db.servers.local import find_bindir
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig


def test_a_migrated_database_verifies(head_db: DatabaseConfig) -> None:
    result = run_inv("db.verify", database=head_db)
    assert result.returncode == 0, result.stderr
    assert f"matches revision {HEAD}" in result.stdout


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            "CREATE OR REPLACE FUNCTION get_active_sessions_count() RETURNS INTEGER "
            "LANGUAGE sql STABLE AS $$ SELECT 0 $$",
            "function get_active_sessions_count(): body differs",
        ),
        (
            "ALTER TABLE project_charters DROP CONSTRAINT project_charters_feasibility_level_check",
            "constraint project_charters.project_charters_feasibility_level_check: missing",
        ),
        ("ALTER TABLE checkpoints ADD COLUMN note text", "column checkpoints.note: unexpected"),
        (
            "ALTER TABLE sessions DISABLE TRIGGER trigger_update_sessions_timestamp",
            "trigger sessions.trigger_update_sessions_timestamp: state enabled -> disabled",
        ),
    ],
)
def test_drift_exits_1_and_names_the_object(
    head_db: DatabaseConfig, change: str, named: str
) -> None:
    sql(head_db, change)
    result = run_inv("db.verify", database=head_db)
    assert result.returncode == 1
    assert named in result.stderr
    as_json = run_inv("db.verify", "--json", database=head_db)
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["differences"] == [named]


def test_an_empty_database_verifies_as_base(empty_db: DatabaseConfig) -> None:
    result = run_inv("db.verify", database=empty_db)
    assert result.returncode == 0 and "matches revision base" in result.stdout


def test_committed_snapshots_are_current(server: ScratchServer) -> None:
    assert expected.stale(snapshots.build(server)) == []


def test_stale_snapshots_are_reported(server: ScratchServer, checkout: object) -> None:
    path = expected.snapshot_path(WIDEN)
    path.write_text(path.read_text().replace("character varying(500)", "character varying(400)"))
    (expected.snapshot_dir() / "feedface0000.json").write_text("{}\n")
    assert expected.stale(snapshots.build(server)) == [
        f"{WIDEN}.json: differs from what the migrations build",
        "feedface0000.json: no such revision",
    ]


def test_stamp_auto_finds_the_baseline_of_an_init_sql_database(
    empty_db: DatabaseConfig, head_db: DatabaseConfig
) -> None:
    seed(empty_db)
    result = run_inv("db.stamp", "--rev", "auto", "db.upgrade", database=empty_db)
    assert result.returncode == 0, result.stderr
    assert "matches revision 03033cebb647" in result.stdout
    assert take(empty_db) == take(head_db)
    assert run_inv("db.verify", database=empty_db).returncode == 0


def test_stamp_refuses_a_revision_the_schema_does_not_match(empty_db: DatabaseConfig) -> None:
    seed(empty_db)
    result = run_inv("db.stamp", "--rev", WIDEN, database=empty_db)
    assert result.returncode == 1
    assert f"not revision {WIDEN}'s" in result.stderr
    assert "column sessions.email: missing" in result.stderr
    assert sql(empty_db, "SELECT to_regclass('alembic_version')") == [(None,)]
    forced = run_inv("db.stamp", "--rev", WIDEN, "--force", database=empty_db)
    assert forced.returncode == 0 and "despite" in forced.stdout
    assert applied.current_revisions(empty_db) == (WIDEN,)


def test_stamp_auto_refuses_a_schema_that_matches_nothing(empty_db: DatabaseConfig) -> None:
    seed(empty_db)
    sql(empty_db, "ALTER TABLE sessions ADD COLUMN nickname text")
    result = run_inv("db.stamp", "--rev", "auto", database=empty_db)
    assert result.returncode == 1
    assert "matches no revision; the closest is 03033cebb647" in result.stderr
    assert "column sessions.nickname: unexpected" in result.stderr


def test_stamp_auto_on_an_empty_database_says_upgrade(empty_db: DatabaseConfig) -> None:
    result = run_inv("db.stamp", "--rev", "auto", database=empty_db)
    assert result.returncode == 1 and "db.upgrade" in result.stderr


def test_offline_sql_builds_the_same_schema(
    empty_db: DatabaseConfig, head_db: DatabaseConfig
) -> None:
    import subprocess

    bindir = find_bindir()
    assert bindir is not None
    rendered = run_inv("db.upgrade", "--sql", database=empty_db)
    assert rendered.returncode == 0, rendered.stderr
    ran = subprocess.run(
        [str(bindir / "psql"), "-v", "ON_ERROR_STOP=1", "-q", "-X"],
        input=rendered.stdout,
        env={"PATH": "/usr/bin:/bin", **empty_db.libpq_env()},
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert take(empty_db) == take(head_db)
    assert applied.current_revisions(empty_db) == (HEAD,)


def test_a_container_database_built_from_init_sql_is_adopted(empty_db: DatabaseConfig) -> None:
    from uaip_db.cli.server import adopt_init_sql_database

    seed(empty_db)
    lines: list[str] = []
    assert adopt_init_sql_database(empty_db, lines.append)
    assert applied.current_revisions(empty_db) == ("03033cebb647",)
    assert "recorded revision 03033cebb647" in lines[0]
    assert not adopt_init_sql_database(empty_db, lines.append)


def test_a_drifted_container_database_is_left_alone(empty_db: DatabaseConfig) -> None:
    from uaip_db.cli.server import adopt_init_sql_database

    seed(empty_db)
    sql(empty_db, "ALTER TABLE sessions ADD COLUMN nickname text")
    assert not adopt_init_sql_database(empty_db, print)
    assert applied.current_revisions(empty_db) == ()
    assert not adopt_init_sql_database(empty_db.with_database(empty_db.name), print)
