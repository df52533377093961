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
    assert all(rows.count == sample_data.ROWS_PER_TABLE for rows in hashes.values())
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
        "table checkpoints: row contents changed (column checkpoint_data)",
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


def test_fill_many_fills_every_table_in_bulk_from_the_catalog(head_db: DatabaseConfig) -> None:
    """Whatever the head's columns: every table full, multibyte text, nested JSON, some NULLs."""
    with psycopg.connect(**head_db.connect_kwargs(), autocommit=True) as conn:
        assert sample_data.fill_many(conn, 50, per_parent=3) == []
        tables = sample_data.read_tables(conn)
        counts = {name: rows.count for name, rows in sample_data.table_hashes(conn).items()}
        roots = [t.name for t in tables if not t.depends_on]
        assert roots and all(counts[name] == 50 for name in roots)
        assert all(50 <= counts[t.name] <= 150 for t in tables if t.depends_on)
        assert any(counts[t.name] == 150 for t in tables if t.depends_on)  # a few per parent
        for table in tables:
            for column in table.columns:
                query = psycopg.sql.SQL(
                    "SELECT count(*) FILTER (WHERE {c} IS NULL), count({c}), "
                    "bool_or({c}::text ~ '[^\\x01-\\x7e]'), bool_or(jsonb_typeof(to_jsonb({c})"
                    " -> 'nested') = 'object') FROM {t}"
                ).format(
                    c=psycopg.sql.Identifier(column.name), t=psycopg.sql.Identifier(table.name)
                )
                nulls, values, multibyte, nested = conn.execute(query).fetchone() or (0, 0, 0, 0)
                assert values > 0, f"{table.name}.{column.name} holds no value"
                if not column.not_null and not column.has_default and not column.references:
                    assert nulls > 0, f"{table.name}.{column.name} is never NULL"
                if column.type in ("text", "character varying") and not column.check_literals:
                    assert multibyte, f"{table.name}.{column.name} holds only ASCII"
                if column.type == "jsonb" and not column.has_default:
                    assert nested, f"{table.name}.{column.name} holds no nested JSON"
