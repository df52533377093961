"""Alembic operations through uaip_db.migrations.runner, against real PostgreSQL."""

from __future__ import annotations

import io

import pytest

from tests.conftest import CHAIN, EMAIL, HEAD, WIDEN, sql
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
    assert [line.split()[1] for line in lines] == CHAIN
    assert all(line.strip().startswith("applied") and line.endswith(" s") for line in lines)


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
