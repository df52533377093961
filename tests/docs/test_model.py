"""uaip_db.docs.model: the typed schema read from a snapshot, and documentation coverage."""

from __future__ import annotations

from tests.docs.conftest import CHILD_TABLES, TABLES, with_objects
from uaip_db.catalog.snapshot import ObjectKey, Snapshot
from uaip_db.docs import model

# --- documentation coverage ---------------------------------------------------------------------


def test_missing_comments_lists_every_uncommented_table_and_column(head: Snapshot) -> None:
    missing = model.missing_comments(head)

    assert missing == sorted(missing)
    assert "table sessions" in missing
    assert "column sessions.email" in missing
    assert {line.split()[0] for line in missing} == {"table", "column"}
    tables_and_columns = [key for key in head.objects if key.split()[0] in ("table", "column")]
    assert len(missing) == len(tables_and_columns) == 7 + 52


def test_a_comment_takes_an_object_off_the_missing_list(head: Snapshot) -> None:
    commented = with_objects(head, table__sessions={"persistence": "permanent", "comment": "x"})
    missing = model.missing_comments(commented)
    assert "table sessions" not in missing
    assert "column sessions.email" in missing


# --- the model read from a snapshot ---------------------------------------------------------------


def test_read_schema_gives_every_table_with_its_parts(head: Snapshot) -> None:
    schema = model.read_schema(head)

    assert [table.name for table in schema.sorted_tables()] == sorted(TABLES)
    sessions = schema.tables["sessions"]
    assert sessions.primary_key is not None
    assert sessions.primary_key.key_columns == ("session_id",)
    assert sessions.ordered_columns()[0].name == "session_id"
    assert sessions.columns["email"].type == "character varying(255)"
    assert sessions.columns["email"].nullable
    assert "idx_sessions_email" in sessions.indexes
    assert "trigger_update_sessions_timestamp" in sessions.triggers
    assert sorted(schema.extensions) == ["uuid-ossp"]
    assert len(schema.routines) == 5


def test_foreign_keys_and_unique_column_sets(head: Snapshot) -> None:
    schema = model.read_schema(head)

    keys = {(key.table, key.target) for key in schema.foreign_keys()}
    assert keys == {(table, "sessions") for table in CHILD_TABLES}
    (charter_key,) = schema.tables["project_charters"].foreign_keys
    assert charter_key.columns == charter_key.target_columns == ("session_id",)
    assert charter_key.actions == "ON DELETE CASCADE"
    assert frozenset({"session_id"}) in schema.tables["project_charters"].unique_column_sets()


def test_snapshot_keys_are_split_into_kind_owner_and_name() -> None:
    assert ObjectKey.parse("materialized view v") == ObjectKey("materialized view", "v")
    assert ObjectKey.parse("column sessions.email") == ObjectKey("column", "sessions.email")
    assert str(ObjectKey.parse("window function f(int)")) == "window function f(int)"
    assert model.split_owner("a.b.c", ["a", "a.b"]) == ("a.b", "c")
    assert model.split_identifiers('a, "B ""c"""') == ("a", 'B "c"')
    assert model.snapshot_table_name("public.sessions") == "sessions"
    assert model.snapshot_table_name('other."T"') == "other.T"
