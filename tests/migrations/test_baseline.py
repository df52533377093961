"""The schema the migrations build: objects, trigger and function behaviour, clean downgrade."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import psycopg
import pytest

from tests.conftest import HEAD_TABLES, sql
from uaip_db import paths
from uaip_db.catalog.trust import is_bookkeeping
from uaip_db.checks import sample_data
from uaip_db.migrations import applied, runner
from uaip_db.migrations.baseline import (
    BASELINE_FUNCTIONS,
    BASELINE_REVISION,
    BASELINE_TABLES,
    BASELINE_TRIGGERS,
    seed,
)
from uaip_db.migrations.ledger import LEDGER_TABLE
from uaip_db.settings import DatabaseConfig

# init.sql is schema v1.0.0 and frozen: later versions are revisions, never edits to this file.
INIT_SQL_SHA256 = "dcfd5e3f25b8b93ca90c48e26be583631708e58759e720d8c3f0e8e0c88878ac"

USER_OBJECTS = """
SELECT 'relation ' || c.relname FROM pg_class c
 WHERE c.relnamespace = 'public'::regnamespace AND c.relname <> 'alembic_version'
   AND c.relname NOT LIKE 'alembic_version%' AND c.relname NOT LIKE 'uaip_db\\_%'
UNION ALL SELECT 'function ' || p.proname FROM pg_proc p
 WHERE p.pronamespace = 'public'::regnamespace
UNION ALL SELECT 'trigger ' || t.tgname FROM pg_trigger t WHERE NOT t.tgisinternal
UNION ALL SELECT 'extension ' || e.extname FROM pg_extension e WHERE e.extname <> 'plpgsql'
UNION ALL SELECT 'type ' || t.typname FROM pg_type t
 WHERE t.typnamespace = 'public'::regnamespace AND t.typname NOT IN ('alembic_version')
   AND t.typname NOT LIKE '\\_alembic%' AND t.typname NOT LIKE '%uaip_db\\_%'
"""


def names(database: DatabaseConfig, query: str) -> set[str]:
    return {row[0] for row in sql(database, query)}


def test_init_sql_is_frozen_at_v1_0_0() -> None:
    digest = hashlib.sha256(paths.init_sql().read_bytes()).hexdigest()
    assert digest == INIT_SQL_SHA256, "database/init.sql changed: add a revision instead"


def test_upgrade_creates_every_table_function_trigger_and_the_extension(
    head_db: DatabaseConfig,
) -> None:
    tables = names(head_db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    # The project's bookkeeping besides (a backfill's progress table stays once made).
    assert {"alembic_version", LEDGER_TABLE} <= tables
    assert set(BASELINE_TABLES) <= {t for t in tables if not is_bookkeeping(t)} == set(HEAD_TABLES)
    functions = names(
        head_db, "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
    )
    assert set(BASELINE_FUNCTIONS) <= functions
    triggers = names(head_db, "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
    assert triggers == set(BASELINE_TRIGGERS)
    assert names(head_db, "SELECT extname FROM pg_extension") >= {"uuid-ossp"}
    foreign_keys = sql(
        head_db,
        "SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
        "AND confrelid = 'sessions'::regclass AND conrelid::regclass::text = ANY(%s)",
        (list(BASELINE_TABLES),),
    )[0][0]
    assert foreign_keys == len(BASELINE_TABLES) - 1


def test_v1_1_0_is_applied(head_db: DatabaseConfig) -> None:
    email = sql(
        head_db,
        "SELECT format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
        "WHERE attrelid = 'sessions'::regclass AND attname = 'email'",
    )
    assert email == [("character varying(255)", False)]
    user_id = sql(
        head_db,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'sessions'::regclass AND attname = 'user_id'",
    )
    assert user_id == [("character varying(500)",)]
    index = sql(
        head_db,
        "SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indexrelid = 'idx_sessions_email'::regclass",
    )
    assert index and index[0][0] is True and "(email)" in index[0][1]


def new_session(
    conn: psycopg.Connection[Any], user: str = "u1", status: str = "in_progress"
) -> Any:
    row = conn.execute(
        "INSERT INTO sessions (user_id, status) VALUES (%s, %s) RETURNING session_id",
        (user, status),
    ).fetchone()
    assert row is not None
    return row[0]


def test_session_trigger_moves_updated_at(head_db: DatabaseConfig) -> None:
    with psycopg.connect(**head_db.connect_kwargs(), autocommit=True) as conn:
        session_id = new_session(conn)
        before = conn.execute(
            "SELECT updated_at FROM sessions WHERE session_id = %s", (session_id,)
        ).fetchone()
        time.sleep(0.01)
        # Any update moves it; the key is the one column every later schema keeps.
        conn.execute(
            "UPDATE sessions SET session_id = session_id WHERE session_id = %s", (session_id,)
        )
        after = conn.execute(
            "SELECT updated_at FROM sessions WHERE session_id = %s", (session_id,)
        ).fetchone()
    assert before is not None and after is not None
    assert after[0] > before[0]


def test_stage_data_trigger_moves_its_timestamp_and_the_sessions_activity(
    head_db: DatabaseConfig,
) -> None:
    with psycopg.connect(**head_db.connect_kwargs(), autocommit=True) as conn:
        session_id = new_session(conn)
        conn.execute(
            "UPDATE sessions SET last_activity = now() - interval '3 days' WHERE session_id = %s",
            (session_id,),
        )
        conn.execute(
            "INSERT INTO stage_data (session_id, stage_number, field_name, field_value) "
            "VALUES (%s, 1, 'problem', '\"churn\"')",
            (session_id,),
        )
        first = conn.execute("SELECT updated_at FROM stage_data").fetchone()
        activity = conn.execute(
            "SELECT last_activity > now() - interval '1 minute' FROM sessions"
        ).fetchone()
        time.sleep(0.01)
        conn.execute("UPDATE stage_data SET field_value = '\"retention\"'")
        second = conn.execute("SELECT updated_at FROM stage_data").fetchone()
    assert activity == (True,)
    assert first is not None and second is not None and second[0] > first[0]


def test_functions_answer_on_real_rows(head_db: DatabaseConfig) -> None:
    with psycopg.connect(**head_db.connect_kwargs(), autocommit=True) as conn:
        active = new_session(conn, "a")
        new_session(conn, "b")
        new_session(conn, "c", status="completed")
        stale = new_session(conn, "d")
        for stage, field in [(1, "problem"), (1, "users"), (2, "data")]:
            conn.execute(
                "INSERT INTO stage_data (session_id, stage_number, field_name, field_value) "
                "VALUES (%s, %s, %s, '{}')",
                (active, stage, field),
            )
        assert conn.execute("SELECT get_active_sessions_count()").fetchone() == (3,)
        progress = conn.execute(
            "SELECT stage_number, fields_completed FROM get_session_progress(%s)", (active,)
        ).fetchall()
        assert progress == [(1, 2), (2, 1)]
        conn.execute(
            "UPDATE sessions SET last_activity = now() - interval '8 days' WHERE session_id = %s",
            (stale,),
        )
        assert conn.execute("SELECT mark_abandoned_sessions()").fetchone() == (1,)
        assert conn.execute(
            "SELECT status FROM sessions WHERE session_id = %s", (stale,)
        ).fetchone() == ("abandoned",)
        assert conn.execute("SELECT get_active_sessions_count()").fetchone() == (2,)
        assert conn.execute("SELECT mark_abandoned_sessions()").fetchone() == (0,)


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        (
            "INSERT INTO sessions (user_id, current_stage) VALUES ('u', 6)",
            "sessions_current_stage_check",
        ),
        ("INSERT INTO sessions (user_id, status) VALUES ('u', 'paused')", "sessions_status_check"),
        (
            "INSERT INTO stage_data (session_id, stage_number, field_name, field_value) "
            "VALUES (uuid_generate_v4(), 1, 'f', '{}')",
            "stage_data_session_id_fkey",
        ),
    ],
)
def test_constraints_reject_bad_rows(
    head_db: DatabaseConfig, statement: str, constraint: str
) -> None:
    with pytest.raises(psycopg.errors.IntegrityError, match=constraint):
        sql(head_db, statement)


def test_deleting_a_session_cascades(head_db: DatabaseConfig) -> None:
    """Every table that references sessions, whatever its columns at head, loses its rows."""
    with psycopg.connect(**head_db.connect_kwargs(), autocommit=True) as conn:
        assert sample_data.fill_many(conn, 5) == []
        children = [
            t.name
            for t in sample_data.read_tables(conn)
            if any(c.references and c.references[0] == "sessions" for c in t.columns)
        ]
        assert children
        counts = sample_data.table_hashes(conn)
        assert all(counts[name].count > 0 for name in children)
        conn.execute("DELETE FROM sessions")
        counts = sample_data.table_hashes(conn)
    assert {name: counts[name].count for name in children} == dict.fromkeys(children, 0)


def test_downgrade_to_base_leaves_nothing_behind(empty_db: DatabaseConfig) -> None:
    before = names(empty_db, USER_OBJECTS)
    runner.upgrade(empty_db, "head")
    assert names(empty_db, USER_OBJECTS) > before
    runner.downgrade(empty_db, "base")
    assert names(empty_db, USER_OBJECTS) == before
    assert applied.current_revisions(empty_db) == ()


def test_the_seeded_path_reaches_the_same_head(
    empty_db: DatabaseConfig, head_db: DatabaseConfig
) -> None:
    seed(empty_db)
    runner.stamp(empty_db, BASELINE_REVISION)
    runner.upgrade(empty_db, "head")
    assert applied.current_revisions(empty_db) == applied.current_revisions(head_db)
    columns = """
        SELECT c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
               || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
    """
    assert names(empty_db, columns) == names(head_db, columns)
    assert names(empty_db, USER_OBJECTS) == names(head_db, USER_OBJECTS)


def test_seed_refuses_a_database_that_has_the_schema(head_db: DatabaseConfig) -> None:
    from uaip_db.errors import CheckFailed

    with pytest.raises(CheckFailed, match="already has UAIP tables"):
        seed(head_db)
