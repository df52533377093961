"""Sample rows reach every table and column, and the table hashes notice any change."""

from __future__ import annotations

import psycopg

from tests.conftest import HEAD_TABLES, sql
from uaip_db.checks import sample_data
from uaip_db.settings import DatabaseConfig


def test_fill_reaches_every_table_and_column(head_db: DatabaseConfig) -> None:
    with psycopg.connect(**head_db.connect_kwargs(), autocommit=True) as conn:
        assert sample_data.fill(conn) == []
        hashes = sample_data.table_hashes(conn)
    assert set(hashes) == set(HEAD_TABLES)
    assert all(count == sample_data.ROWS_PER_TABLE for count, _ in hashes.values())
    assert sql(head_db, "SELECT count(*) FROM sessions WHERE email IS NULL") == [(0,)]
    assert sql(head_db, "SELECT count(*) FROM stage_data WHERE field_value ? 'note'") == [(3,)]


def test_fill_is_repeatable_and_only_fills_what_is_empty(head_db: DatabaseConfig) -> None:
    with psycopg.connect(**head_db.connect_kwargs(), autocommit=True) as conn:
        sample_data.fill(conn)
        first = sample_data.table_hashes(conn)
        sample_data.fill(conn)
        assert sample_data.table_hashes(conn) == first


def test_hashes_notice_a_changed_value_and_a_lost_row(head_db: DatabaseConfig) -> None:
    with psycopg.connect(**head_db.connect_kwargs(), autocommit=True) as conn:
        sample_data.fill(conn)
        before = sample_data.table_hashes(conn)
        conn.execute("UPDATE checkpoints SET checkpoint_data = '{}' WHERE stage_number = 1")
        conn.execute("DELETE FROM quality_metrics WHERE quality_score = 0")
        after = sample_data.table_hashes(conn)
    assert sample_data.changed_tables(before, after) == [
        "table checkpoints: row contents changed",
        "table quality_metrics: 3 rows -> 1",
    ]


def test_check_literals() -> None:
    definition = "CHECK (((status)::text = ANY ((ARRAY['in_progress'::varchar, 'it''s'])::text[])))"
    assert sample_data.check_literals(definition) == ["in_progress", "it's"]
    assert sample_data.check_literals(
        "CHECK (((current_stage >= 1) AND (current_stage <= 5)))"
    ) == [
        "1",
        "5",
    ]
