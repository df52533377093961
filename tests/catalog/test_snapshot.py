"""uaip_db.catalog.snapshot on real PostgreSQL: what a fingerprint sees, and what it ignores."""

from __future__ import annotations

import json

import pytest
from psycopg import sql as psql

from tests.conftest import sql
from uaip_db.catalog import snapshot
from uaip_db.catalog.snapshot import Snapshot
from uaip_db.migrations import baseline as schema
from uaip_db.migrations import runner
from uaip_db.pg import connection
from uaip_db.settings import DatabaseConfig

BASELINE_FUNCTION_KEYS = (
    "function update_sessions_timestamp()",
    "function update_stage_data_timestamp()",
    "function get_active_sessions_count()",
    "function get_session_progress(uuid)",
    "function mark_abandoned_sessions()",
)


def test_head_snapshot_has_every_object_of_the_schema(head_db: DatabaseConfig) -> None:
    objects = snapshot.take(head_db).objects

    for table in schema.BASELINE_TABLES:
        assert f"table {table}" in objects
    for key in BASELINE_FUNCTION_KEYS:
        assert objects[key]["body"].strip()
    assert "trigger sessions.trigger_update_sessions_timestamp" in objects
    assert "trigger stage_data.trigger_update_stage_data_timestamp" in objects
    assert objects["extension uuid-ossp"]["version"]
    assert objects["column sessions.email"] == {
        "type": "character varying(255)",
        "not_null": False,
        "comment": "Contact address of the user, when they chose to give one.",
    }
    assert objects["column sessions.user_id"]["type"] == "character varying(500)"
    assert objects["column sessions.metadata"]["default"] == "'{}'::jsonb"
    assert objects["index idx_sessions_email"]["valid"] is True
    assert objects["index sessions_pkey"]["constraint"] == "sessions_pkey"
    assert "in_progress" in objects["constraint sessions.sessions_status_check"]["definition"]
    assert objects["function get_session_progress(uuid)"]["volatility"] == "stable"
    assert not [key for key in objects if "alembic_version" in key]


def test_objects_of_extensions_are_left_out(head_db: DatabaseConfig) -> None:
    objects = snapshot.take(head_db).objects

    assert not [key for key in objects if "uuid_generate" in key]
    assert "extension plpgsql" not in objects


def test_an_empty_database_gives_an_empty_snapshot(empty_db: DatabaseConfig) -> None:
    assert len(snapshot.take(empty_db)) == 0


def test_two_databases_at_head_are_equal(head_db: DatabaseConfig, empty_db: DatabaseConfig) -> None:
    runner.upgrade(empty_db, "head")

    cloned, upgraded = snapshot.take(head_db), snapshot.take(empty_db)

    assert snapshot.diff(cloned, upgraded) == []
    assert cloned == upgraded
    assert cloned.digest() == upgraded.digest()


def test_json_round_trip_is_exact(head_db: DatabaseConfig) -> None:
    taken = snapshot.take(head_db)
    text = taken.to_json()

    restored = Snapshot.from_json(text)

    assert restored == taken
    assert restored.to_json() == text
    assert restored.digest() == taken.digest()
    assert text.endswith("}\n")
    assert json.loads(text) == taken.objects


def test_from_json_refuses_what_is_not_a_snapshot() -> None:
    with pytest.raises(ValueError):
        Snapshot.from_json('["table sessions"]')


CHANGES = {
    "function body": (
        "CREATE OR REPLACE FUNCTION get_active_sessions_count() RETURNS INTEGER "
        "LANGUAGE sql STABLE AS $$ SELECT COUNT(*)::INTEGER FROM sessions $$",
        ["function get_active_sessions_count(): body differs"],
    ),
    "function volatility": (
        "ALTER FUNCTION get_active_sessions_count() VOLATILE",
        ["function get_active_sessions_count(): volatility stable -> volatile"],
    ),
    "dropped check": (
        "ALTER TABLE sessions DROP CONSTRAINT sessions_status_check",
        ["constraint sessions.sessions_status_check: missing"],
    ),
    "added column": (
        "ALTER TABLE sessions ADD COLUMN nickname TEXT",
        ["column sessions.nickname: unexpected"],
    ),
    "column type": (
        "ALTER TABLE sessions ALTER COLUMN user_id TYPE VARCHAR(255)",
        ["column sessions.user_id: type character varying(500) -> character varying(255)"],
    ),
    "jsonb default": (
        "ALTER TABLE quality_metrics ALTER COLUMN issues SET DEFAULT '{}'::jsonb",
        ["column quality_metrics.issues: default '[]'::jsonb -> '{}'::jsonb"],
    ),
    "disabled trigger": (
        "ALTER TABLE sessions DISABLE TRIGGER trigger_update_sessions_timestamp",
        ["trigger sessions.trigger_update_sessions_timestamp: state enabled -> disabled"],
    ),
    "table comment": (
        "COMMENT ON TABLE sessions IS 'Scoping sessions'",
        ["table sessions: comment differs"],
    ),
    "new index": (
        "CREATE INDEX idx_sessions_by_key ON sessions (session_id)",
        ["index idx_sessions_by_key: unexpected"],
    ),
    "new enum": (
        "CREATE TYPE mood AS ENUM ('calm', 'busy')",
        ["enum mood: unexpected"],
    ),
    "new view and sequence": (
        "CREATE VIEW open_sessions AS SELECT session_id FROM sessions "
        "WHERE status = 'in_progress'; CREATE SEQUENCE ticket_numbers",
        ["sequence ticket_numbers: unexpected", "view open_sessions: unexpected"],
    ),
}


@pytest.mark.parametrize(("statement", "expected"), CHANGES.values(), ids=CHANGES.keys())
def test_a_change_is_named_and_nothing_else(
    head_db: DatabaseConfig, statement: str, expected: list[str]
) -> None:
    before = snapshot.take(head_db)
    sql(head_db, statement)

    after = snapshot.take(head_db)

    assert snapshot.diff(before, after) == expected
    assert before.digest() != after.digest()


def test_the_diff_reads_both_ways(head_db: DatabaseConfig) -> None:
    before = snapshot.take(head_db)
    sql(head_db, "ALTER TABLE sessions ADD COLUMN nickname TEXT")
    after = snapshot.take(head_db)

    assert snapshot.diff(after, before) == ["column sessions.nickname: missing"]


def test_sequences_know_the_column_that_owns_them(head_db: DatabaseConfig) -> None:
    sql(
        head_db,
        "ALTER TABLE sessions ADD COLUMN ticket SERIAL; "
        "ALTER TABLE checkpoints ADD COLUMN serial_no BIGINT GENERATED ALWAYS AS IDENTITY",
    )

    objects = snapshot.take(head_db).objects

    assert objects["sequence sessions_ticket_seq"]["owned_by"] == "sessions.ticket"
    assert objects["sequence sessions_ticket_seq"]["data_type"] == "integer"
    assert objects["sequence checkpoints_serial_no_seq"]["owned_by"] == "checkpoints.serial_no"
    assert objects["column checkpoints.serial_no"]["identity"] == "always"
    assert objects["column sessions.ticket"]["default"] == (
        "nextval('sessions_ticket_seq'::regclass)"
    )


def test_partitions_views_procedures_and_column_details_are_read(
    empty_db: DatabaseConfig,
) -> None:
    sql(
        empty_db,
        'CREATE TABLE events (at DATE, note TEXT COLLATE "C") PARTITION BY RANGE (at); '
        "CREATE TABLE events_2025 PARTITION OF events "
        "FOR VALUES FROM ('2025-01-01') TO ('2026-01-01'); "
        "CREATE UNLOGGED TABLE scores "
        "(a INT PRIMARY KEY, b INT GENERATED ALWAYS AS (a * 2) STORED); "
        "CREATE UNLOGGED TABLE notes (a INT REFERENCES scores DEFERRABLE INITIALLY DEFERRED); "
        "COMMENT ON COLUMN notes.a IS 'the score'; "
        "CREATE MATERIALIZED VIEW top_scores AS SELECT a FROM scores WHERE b > 10; "
        "CREATE PROCEDURE reset_scores(keep INT, OUT removed INT) LANGUAGE plpgsql "
        "AS $$ BEGIN removed := 0; END $$; "
        "CREATE TYPE mood AS ENUM ('calm', 'busy'); "
        "ALTER TYPE mood ADD VALUE 'tired' BEFORE 'busy'",
    )

    objects = snapshot.take(empty_db).objects

    assert objects["table events"]["partition_key"] == "RANGE (at)"
    assert objects["table events_2025"]["inherits"] == ["events"]
    assert "2025-01-01" in objects["table events_2025"]["partition_bound"]
    assert objects["column events_2025.note"]["collation"] == "C"
    assert objects["table scores"]["persistence"] == "unlogged"
    assert objects["column scores.b"] == {
        "type": "integer",
        "not_null": False,
        "generated": "(a * 2)",
    }
    assert objects["column notes.a"]["comment"] == "the score"
    assert objects["constraint notes.notes_a_fkey"]["initially_deferred"] is True
    assert "b > 10" in objects["materialized view top_scores"]["definition"]
    assert (
        objects["procedure reset_scores(integer)"]["arguments"]
        == "IN keep integer, OUT removed integer"
    )
    assert objects["enum mood"]["labels"] == ["calm", "tired", "busy"]


def test_trailing_spaces_in_a_function_body_do_not_count(head_db: DatabaseConfig) -> None:
    before = snapshot.take(head_db)
    sql(
        head_db,
        "CREATE OR REPLACE FUNCTION get_active_sessions_count() RETURNS INTEGER "
        "LANGUAGE sql STABLE AS $$\n\n"
        "    SELECT COUNT(*)::INTEGER FROM sessions WHERE status = 'in_progress';   \n\n$$",
    )

    assert snapshot.diff(before, snapshot.take(head_db)) == []


def test_bookkeeping_tables_are_ignored(head_db: DatabaseConfig) -> None:
    before = snapshot.take(head_db)
    sql(
        head_db,
        "CREATE TABLE uaip_db_ledger (id SERIAL PRIMARY KEY, note TEXT CHECK (note <> ''));"
        "CREATE INDEX uaip_db_ledger_note ON uaip_db_ledger (note);"
        "CREATE TRIGGER uaip_db_ledger_touch BEFORE UPDATE ON uaip_db_ledger "
        "FOR EACH ROW EXECUTE FUNCTION update_sessions_timestamp();"
        "CREATE SEQUENCE ledger_numbers OWNED BY uaip_db_ledger.id",
    )

    after = snapshot.take(head_db)

    assert snapshot.diff(before, after) == []
    assert not [key for key in after.objects if "uaip_db_" in key]


def test_a_column_dropped_and_added_again_at_the_end_is_the_same(head_db: DatabaseConfig) -> None:
    before = snapshot.take(head_db)
    # The first plain nullable column of sessions (no default, index or constraint), whatever
    # head calls it.
    ((column, type_name, comment),) = sql(
        head_db,
        "SELECT attname, format_type(atttypid, atttypmod), col_description(attrelid, attnum) "
        "FROM pg_attribute WHERE attrelid = 'sessions'::regclass AND attnum > 0 "
        "AND NOT attisdropped AND NOT attnotnull AND NOT atthasdef "
        "AND NOT EXISTS (SELECT 1 FROM pg_index AS i WHERE i.indrelid = attrelid "
        "AND attnum = ANY (i.indkey)) AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c "
        "WHERE c.conrelid = attrelid AND attnum = ANY (c.conkey)) ORDER BY attnum LIMIT 1",
    )
    name = psql.Identifier(column)
    sql(
        head_db,
        psql.SQL("ALTER TABLE sessions DROP COLUMN {0}; ALTER TABLE sessions ADD COLUMN {0} {1}")
        .format(name, psql.SQL(type_name))
        .as_string(None),
    )
    if comment is not None:
        statement = psql.SQL("COMMENT ON COLUMN sessions.{} IS {}").format(
            name, psql.Literal(comment)
        )
        sql(head_db, statement.as_string(None))

    after = snapshot.take(head_db)

    assert snapshot.diff(before, after) == []
    assert before.digest() == after.digest()


def test_init_sql_then_later_revisions_equals_upgrading_from_empty(
    head_db: DatabaseConfig, empty_db: DatabaseConfig
) -> None:
    schema.seed(empty_db)
    runner.stamp(empty_db, schema.BASELINE_REVISION)
    runner.upgrade(empty_db, "head")

    assert snapshot.diff(snapshot.take(head_db), snapshot.take(empty_db)) == []


def test_other_schemas_are_read_only_when_asked(head_db: DatabaseConfig) -> None:
    sql(
        head_db,
        "CREATE SCHEMA reporting; "
        "CREATE TABLE reporting.daily (day DATE PRIMARY KEY, total INTEGER DEFAULT 0); "
        "CREATE FUNCTION reporting.total_for(d DATE) RETURNS INTEGER LANGUAGE sql "
        "AS $$ SELECT total FROM reporting.daily WHERE day = d $$",
    )

    public_only = snapshot.take(head_db)
    both = snapshot.take(head_db, ("public", "reporting"))

    assert not [key for key in public_only.objects if "reporting" in key]
    assert snapshot.diff(public_only, both) == [
        "column reporting.daily.day: unexpected",
        "column reporting.daily.total: unexpected",
        "constraint reporting.daily.daily_pkey: unexpected",
        "function reporting.total_for(date): unexpected",
        "index reporting.daily_pkey: unexpected",
        "schema reporting: unexpected",
        "table reporting.daily: unexpected",
    ]


def test_one_schema_may_be_named_alone(head_db: DatabaseConfig) -> None:
    assert snapshot.take(head_db, "public") == snapshot.take(head_db)
    with pytest.raises(ValueError):
        snapshot.take(head_db, ())


def test_names_do_not_depend_on_the_connection_search_path(head_db: DatabaseConfig) -> None:
    with connection(head_db) as conn:
        conn.execute("SET search_path TO pg_catalog")
        taken = snapshot.take_from(conn)
        search_path = conn.execute("SHOW search_path").fetchone()

    assert search_path == ("pg_catalog",)
    assert taken == snapshot.take(head_db)
    assert taken.objects["column sessions.session_id"]["default"] == "uuid_generate_v4()"


def test_diff_shows_short_values_and_names_long_ones() -> None:
    expected = Snapshot(
        {
            "column t.a": {"type": "integer", "not_null": True},
            "view v": {"definition": "SELECT 1"},
            "constraint t.c": {"definition": "CHECK (a > 0)"},
            "function f()": {"body": "x", "comment": "c" * 80},
        }
    )
    actual = Snapshot(
        {
            "column t.a": {"type": "bigint"},
            "constraint t.c": {"definition": "CHECK (a > 1)"},
            "function f()": {"body": "y", "comment": "d" * 80},
            "enum e": {"labels": ["a"]},
        }
    )

    assert snapshot.diff(expected, actual) == [
        "column t.a: not_null true -> (none)",
        "column t.a: type integer -> bigint",
        "constraint t.c: definition differs",
        "enum e: unexpected",
        "function f(): body differs",
        "function f(): comment differs",
        "view v: missing",
    ]
    assert snapshot.diff(expected, expected) == []


def test_describe_cuts_long_lists() -> None:
    lines = [f"column t.c{n}: missing" for n in range(25)]

    assert snapshot.describe(lines[:2]) == "column t.c0: missing\ncolumn t.c1: missing"
    described = snapshot.describe(lines, limit=20).splitlines()
    assert len(described) == 21
    assert described[-1] == "... and 5 more"
    assert snapshot.describe([]) == ""


def test_a_check_reads_the_same_before_and_after_a_dump() -> None:
    created = (
        "CHECK (status::text = ANY (ARRAY['in_progress'::character varying, "
        "'it''s'::character varying]::text[]))"
    )
    restored = (
        "CHECK (status::text = ANY (ARRAY['in_progress'::character varying::text, "
        "'it''s'::character varying::text]))"
    )
    assert snapshot.canonical_definition(created) == restored
    assert snapshot.canonical_definition(restored) == restored
