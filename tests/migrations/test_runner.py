"""Alembic operations through uaip_db.migrations.runner, against real PostgreSQL."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from tests.conftest import (
    BIN,
    CHAIN,
    EMAIL,
    HEAD,
    ROOT,
    WIDEN,
    run_cli,
    run_inv,
    sql,
    write_revision,
)
from uaip_db.errors import MigrationError, SettingsError
from uaip_db.migrations import applied, history, runner
from uaip_db.migrations.baseline import BASELINE_REVISION
from uaip_db.settings import DatabaseConfig


def test_one_linear_head() -> None:
    assert history.load().heads == [HEAD]


def test_pending_revisions_walk_from_the_current_one(empty_db: DatabaseConfig) -> None:
    assert [
        s.revision for s in history.load().pending(applied.current_revisions(empty_db))
    ] == CHAIN
    runner.upgrade(empty_db, EMAIL)
    assert applied.current_revisions(empty_db) == (EMAIL,)
    pending = history.load().pending(applied.current_revisions(empty_db))
    assert [s.revision for s in pending] == CHAIN[CHAIN.index(WIDEN) :]


def test_reports_each_applied_revision(empty_db: DatabaseConfig) -> None:
    lines: list[str] = []
    runner.upgrade(empty_db, "head", report=lines.append)
    # A revision may report more (a backfill its progress): one "applied" line per revision.
    applied_lines = [line for line in lines if line.strip().startswith("applied")]
    assert [line.split()[1] for line in applied_lines] == CHAIN
    assert all(line.endswith(" s") for line in applied_lines)


def test_unknown_revision_is_a_usage_error(empty_db: DatabaseConfig) -> None:
    with pytest.raises(SettingsError, match=r"db\.history"):
        runner.upgrade(empty_db, "deadbeef0000")


def test_downgrade_past_base_is_a_usage_error(head_db: DatabaseConfig) -> None:
    with pytest.raises(SettingsError, match="not that many revisions"):
        runner.downgrade(head_db, f"-{len(CHAIN) + 1}")
    assert applied.current_revisions(head_db) == (HEAD,)


def test_narrowing_user_id_refuses_to_truncate(head_db: DatabaseConfig) -> None:
    sql(head_db, "INSERT INTO sessions (user_id) VALUES (repeat('x', 300))")
    with pytest.raises(MigrationError, match=r"sessions.user_id has 1 value\(s\) longer than 255"):
        runner.downgrade(head_db, EMAIL)
    assert applied.current_revisions(head_db) == (WIDEN,)
    assert sql(head_db, "SELECT length(user_id) FROM sessions") == [(300,)]


def test_downgrades_keep_rows_that_fit(head_db: DatabaseConfig) -> None:
    sql(head_db, "INSERT INTO sessions (user_id, email) VALUES ('alice', 'a@example.org')")
    runner.downgrade(head_db, EMAIL)
    assert sql(head_db, "SELECT user_id, email FROM sessions") == [("alice", "a@example.org")]


def test_the_email_revision_finishes_an_interrupted_run(empty_db: DatabaseConfig) -> None:
    runner.upgrade(empty_db, BASELINE_REVISION)
    # What a crash during CREATE INDEX CONCURRENTLY leaves: the column committed, an INVALID
    # index, and the version row still at the previous revision.
    sql(empty_db, "ALTER TABLE sessions ADD COLUMN email VARCHAR(255)")
    sql(empty_db, "CREATE INDEX idx_sessions_email ON sessions (email)")
    sql(
        empty_db,
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'idx_sessions_email'::regclass",
    )
    runner.upgrade(empty_db, "head")
    assert applied.current_revisions(empty_db) == (HEAD,)
    assert sql(
        empty_db,
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_sessions_email'::regclass",
    ) == [(True,)]


def test_a_failing_migration_names_the_revision_it_stopped_at(head_db: DatabaseConfig) -> None:
    runner.downgrade(head_db, BASELINE_REVISION)
    sql(head_db, "ALTER TABLE sessions RENAME TO sessions_moved")
    with pytest.raises(MigrationError) as raised:
        runner.upgrade(head_db, "head")
    assert 'relation "sessions" does not exist' in str(raised.value)
    assert "stays at revision 03033cebb647" in str(raised.value)
    assert applied.current_revisions(head_db) == (BASELINE_REVISION,)


def test_offline_sql_renders_the_whole_chain(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    from alembic import command

    from uaip_db.migrations.runner import alembic_config

    command.upgrade(alembic_config(DatabaseConfig(), stdout=out), "head", sql=True)
    rendered = capsys.readouterr().out + out.getvalue()
    assert "CREATE TABLE sessions" in rendered
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_sessions_email" in rendered
    assert "ALTER TABLE sessions ALTER COLUMN user_id TYPE VARCHAR(500)" in rendered
    assert rendered.count("COMMIT;") >= 3


def fill_new_revision(message: str, upgrade: str, downgrade: str) -> Path:
    """`inv db.revision`'s script from the template, with these bodies written in."""
    script = runner.new_revision(message)
    path = Path(script.path)
    text = path.read_text()
    text = text.replace(
        '    """Apply this change."""\n    pass', f'    """Apply."""\n    {upgrade}'
    )
    text = text.replace(
        '    """Undo exactly what upgrade() did."""\n    pass', f'    """Undo."""\n    {downgrade}'
    )
    path.write_text(text)
    return path


def test_a_revision_written_as_alembic_tutorials_write_it_runs(
    checkout: Path, empty_db: DatabaseConfig
) -> None:
    path = fill_new_revision(
        "add charter tags",
        'op.add_column("project_charters", sa.Column("tags", sa.Text(), nullable=True))',
        'op.drop_column("project_charters", "tags")',
    )
    runner.upgrade(empty_db, "head")
    assert sql(
        empty_db,
        "SELECT data_type FROM information_schema.columns "
        "WHERE table_name = 'project_charters' AND column_name = 'tags'",
    ) == [("text",)]
    runner.downgrade(empty_db, "-1")
    # The written file is clean under the project's ruff rules for revisions.
    lint = subprocess.run(
        [str(BIN / "ruff"), "check", "--stdin-filename", f"migrations/versions/{path.name}", "-"],
        input=path.read_text(),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout


def test_a_python_error_in_a_revision_names_its_file_and_line(
    checkout: Path, empty_db: DatabaseConfig
) -> None:
    path = fill_new_revision("divide", "op.execute('SELECT 1'); 1 / 0", "pass")
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "1 / 0" in text)
    with pytest.raises(MigrationError) as raised:
        runner.upgrade(empty_db, "head")
    message = str(raised.value)
    assert f"migrations/versions/{path.name}, line {line}" in message
    assert "ZeroDivisionError: division by zero" in message
    assert f"stays at revision {HEAD}" in message

    # A child: --debug turns Invoke's logging on, which a test process has configured already.
    debug = run_cli(
        "inv", "--debug", "db.upgrade", database=empty_db, env={"UAIP_DB_ROOT": str(checkout)}
    )
    assert debug.returncode == 1, "a failed migration, with or without --debug"
    assert f'File "{path}", line {line}, in upgrade' in debug.stderr


def test_offline_sql_stops_at_the_first_error_whatever_psql_is_told(
    checkout: Path, head_db: DatabaseConfig, tmp_path: Path
) -> None:
    from uaip_db import process
    from uaip_db.servers.binaries import client_program

    write_revision(
        checkout / "migrations" / "versions",
        "b4d5q1000001",
        HEAD,
        ["CREATE TABLE made_before (id int)", "SELECT 1 / 0", "CREATE TABLE made_after (id int)"],
        ["DROP TABLE made_after", "DROP TABLE made_before"],
    )
    rendered = run_inv("db.upgrade", "--sql", database=head_db, env={"UAIP_DB_ROOT": str(checkout)})
    assert rendered.returncode == 0, rendered.stderr
    script = tmp_path / "upgrade.sql"
    script.write_text(rendered.stdout)
    # As the docs run it, and with psql told to go on after errors.
    ran = process.execute(
        [client_program("psql"), "-X", "-v", "ON_ERROR_STOP=0", "-f", str(script)],
        env=head_db.libpq_env(),
    )
    assert ran.returncode != 0
    assert "division by zero" in ran.stderr
    assert applied.current_revisions(head_db) == (HEAD,)
    assert sql(head_db, "SELECT to_regclass('made_before'), to_regclass('made_after')") == [
        (None, None)
    ]


def test_what_a_revision_sets_for_its_session_does_not_reach_the_next(
    checkout: Path, head_db: DatabaseConfig
) -> None:
    versions = checkout / "migrations" / "versions"
    write_revision(
        versions,
        "5e7a11000001",
        HEAD,
        [
            "CREATE SCHEMA elsewhere",
            "SET session_replication_role = replica",
            "SET lock_timeout = 0",
            "SET statement_timeout = 0",
            "SET search_path = elsewhere",
        ],
        ["DROP SCHEMA elsewhere"],
    )
    write_revision(
        versions,
        "5e7a11000002",
        "5e7a11000001",
        [
            "CREATE TABLE seen AS SELECT"
            " current_setting('session_replication_role') AS replication,"
            " current_setting('lock_timeout') AS lock_timeout,"
            " current_setting('statement_timeout') AS statement_timeout,"
            " current_setting('search_path') AS search_path",
        ],
        ["DROP TABLE seen"],
    )
    runner.upgrade(head_db, "head")
    lock_timeout, statement_timeout = runner.timeouts()
    assert sql(head_db, "SELECT * FROM public.seen") == [
        ("origin", lock_timeout, statement_timeout, "public")
    ]
    # The bookkeeping stayed where it belongs.
    assert applied.current_revisions(head_db) == ("5e7a11000002",)
    assert sql(
        head_db,
        "SELECT DISTINCT table_schema FROM information_schema.tables "
        "WHERE table_name IN ('alembic_version', 'uaip_db_migration_ledger', 'seen')",
    ) == [("public",)]
    runner.downgrade(head_db, HEAD)
    assert sql(head_db, "SELECT to_regclass('public.seen'), to_regnamespace('elsewhere')") == [
        (None, None)
    ]


def test_a_revision_that_commits_half_way_says_what_stays(
    checkout: Path, head_db: DatabaseConfig
) -> None:
    write_revision(
        checkout / "migrations" / "versions",
        "ha1f00000001",
        HEAD,
        ["CREATE TABLE half (id int)", "COMMIT", "SELECT 1 / 0"],
        ["DROP TABLE half"],
    )
    with pytest.raises(MigrationError) as raised:
        runner.upgrade(head_db, "head")
    message = str(raised.value)
    assert "Revision ha1f00000001" in message and "division by zero" in message
    assert f"stays at revision {HEAD}, but its schema is not {HEAD}'s:" in message
    assert "table half: unexpected" in message
    assert "part of the revision committed before it failed" in message


def test_the_expand_and_contract_of_one_long_change_get_file_names_that_tell_them_apart(
    checkout: Path,
) -> None:
    # Alembic's default slug (40 characters) cut both names before their last word.
    change = "rename sessions project_name to title for the scoping report"
    expand = Path(runner.new_revision(f"{change} expand").path).name
    contract = Path(runner.new_revision(f"{change} contract").path).name
    assert expand.endswith("_expand.py") and contract.endswith("_contract.py")
