"""The rollback plan: the downgrade SQL keeps its guards, and each way back names its cost."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import EMAIL, WIDEN, sql
from uaip_db import process
from uaip_db.migrations import runner
from uaip_db.servers.local import find_bindir
from uaip_db.settings import DatabaseConfig


def psql_file(database: DatabaseConfig, text: str) -> subprocess.CompletedProcess[str]:
    """Run SQL as a person would run the printed rollback: psql, stopping at the first error."""
    psql = process.tool("psql", find_bindir())
    return subprocess.run(
        [psql, "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "-f", "-"],
        input=text,
        env={**os.environ, **database.libpq_env()},
        capture_output=True,
        text=True,
        timeout=60,
    )


def user_id_type(database: DatabaseConfig) -> str:
    rows = sql(
        database,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'sessions'::regclass AND attname = 'user_id'",
    )
    return str(rows[0][0])


def test_the_rendered_downgrade_keeps_the_guard_before_it_narrows() -> None:
    rendered = runner.render_sql(WIDEN, EMAIL, downgrade=True)
    guard = rendered.index("DO $uaip_guard$")
    assert "WHERE length(user_id) > 255" in rendered[guard:]
    assert "RAISE EXCEPTION 'sessions.user_id has % value(s) longer than 255" in rendered
    assert guard < rendered.index("ALTER TABLE sessions ALTER COLUMN user_id TYPE VARCHAR(255)")


def test_the_rollback_sql_refuses_to_truncate_then_runs_once_values_fit(
    head_db: DatabaseConfig,
) -> None:
    runner.downgrade(head_db, WIDEN)
    sql(head_db, "INSERT INTO sessions (user_id) VALUES (repeat('x', 300)), ('short')")
    rollback = runner.render_sql(WIDEN, EMAIL, downgrade=True)

    refused = psql_file(head_db, rollback)
    assert refused.returncode != 0
    assert "sessions.user_id has 1 value(s) longer than 255 characters" in refused.stderr
    assert user_id_type(head_db) == "character varying(500)"
    assert runner.current_revisions(head_db) == (WIDEN,)
    assert sql(head_db, "SELECT count(*) FROM sessions") == [(2,)]

    sql(head_db, "DELETE FROM sessions WHERE length(user_id) > 255")
    done = psql_file(head_db, rollback)
    assert done.returncode == 0, done.stderr
    assert user_id_type(head_db) == "character varying(255)"
    assert runner.current_revisions(head_db) == (EMAIL,)
    assert sql(head_db, "SELECT user_id FROM sessions") == [("short",)]
