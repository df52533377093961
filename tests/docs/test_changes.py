"""uaip_db.docs.changes: what changed between two snapshots, in words and as a diagram."""

from __future__ import annotations

from tests.docs.conftest import BASELINE, CHILD_TABLES, HEAD, TABLES, committed, mermaid_blocks
from uaip_db.catalog.snapshot import Snapshot
from uaip_db.docs import changes, markdown

# --- what changed between two snapshots ---------------------------------------------------------


def test_change_summary_from_the_baseline_to_head() -> None:
    assert changes.change_summary(committed(BASELINE), committed(HEAD)) == [
        "sessions: + column email character varying(255)",
        "sessions: + index idx_sessions_email",
        "sessions: ~ column user_id character varying(255) -> character varying(500)",
    ]


def test_change_summary_of_equal_snapshots_is_empty(head: Snapshot) -> None:
    assert changes.change_summary(head, head) == []


def test_change_summary_in_the_other_direction() -> None:
    assert changes.change_summary(committed(HEAD), committed(BASELINE)) == [
        "sessions: - column email",
        "sessions: - index idx_sessions_email",
        "sessions: ~ column user_id character varying(500) -> character varying(255)",
    ]


def test_change_summary_names_every_kind_of_change(head: Snapshot) -> None:
    objects = {key: dict(value) for key, value in head.objects.items()}
    for key in [k for k in objects if "checkpoints" in k]:
        del objects[key]
    objects["function get_active_sessions_count()"]["body"] = "SELECT 0;"
    objects["function get_active_sessions_count()"]["volatility"] = "immutable"
    objects["table sessions"]["comment"] = "One scoping session."
    objects["column sessions.email"]["not_null"] = True
    objects["column sessions.email"]["comment"] = "Login"
    objects["column sessions.status"]["default"] = "'completed'::character varying"
    objects["trigger sessions.trigger_update_sessions_timestamp"]["state"] = "disabled"
    objects["constraint sessions.sessions_email_key"] = {"definition": "UNIQUE (email)"}
    objects["index sessions_email_key"] = {
        "constraint": "sessions_email_key",
        "definition": (
            "CREATE UNIQUE INDEX sessions_email_key ON public.sessions USING btree (email)"
        ),
        "unique": True,
        "valid": True,
    }
    objects["table audit"] = {"persistence": "permanent"}
    objects["column audit.id"] = {"type": "bigint", "not_null": True}
    objects["function f(uuid)"] = {"arguments": "u uuid", "result": "void", "body": "SELECT"}

    diagram = changes.change_diagram(head, Snapshot(objects)).splitlines()
    assert '        varchar_255_ email UK "changed: comment, not_null"' in diagram
    assert '        bigint id "added"' in diagram
    assert "    %% removed: - table checkpoints" in diagram
    assert changes.change_summary(head, Snapshot(objects)) == [
        "+ function f(uuid)",
        "+ table audit",
        "- table checkpoints",
        "~ function get_active_sessions_count(): body changed",
        "~ function get_active_sessions_count(): volatility stable -> immutable",
        "sessions: + constraint sessions_email_key UNIQUE (email)",
        "sessions: ~ column email: now NOT NULL",
        "sessions: ~ column status: default 'in_progress'::character varying -> "
        "'completed'::character varying",
        "sessions: ~ comments added on the table and 1 column",
        "sessions: ~ trigger trigger_update_sessions_timestamp: state enabled -> disabled",
    ]


def test_rules_and_policies_are_told_with_their_table(head: Snapshot) -> None:
    objects = {key: dict(value) for key, value in head.objects.items()}
    objects["rule sessions.keep_sessions"] = {
        "definition": "CREATE RULE keep_sessions AS ON DELETE TO sessions DO INSTEAD NOTHING",
        "state": "enabled",
    }
    objects["policy stage_data.own_answers"] = {"command": "SELECT", "permissive": True}
    objects["table sessions"]["row_security"] = True
    changed = Snapshot(objects)

    assert changes.change_summary(head, changed) == [
        "sessions: + rule keep_sessions",
        "sessions: ~ table: row_security (none) -> true",
        "stage_data: + policy own_answers",
    ]
    assert changes.change_summary(changed, head) == [
        "sessions: - rule keep_sessions",
        "sessions: ~ table: row_security true -> (none)",
        "stage_data: - policy own_answers",
    ]


def test_change_diagram_marks_added_and_changed_columns() -> None:
    diagram = changes.change_diagram(committed(BASELINE), committed(HEAD))
    lines = diagram.splitlines()

    assert lines[0] == "erDiagram"
    assert "    %% changed table: sessions" in lines
    assert '        varchar_255_ email "added"' in lines
    assert '        varchar_500_ user_id "changed: type"' in lines
    assert "        varchar_500_ project_name" in lines
    for table in TABLES:
        assert f"    {table} {{" in lines
    assert sum(1 for line in lines if "--" in line) == len(CHILD_TABLES)
    assert "classDef" not in diagram and "style " not in diagram


def test_change_diagram_names_added_and_removed_tables(head: Snapshot) -> None:
    objects = {k: v for k, v in head.objects.items() if "checkpoints" not in k}
    objects["table audit"] = {"persistence": "permanent"}
    objects["column audit.id"] = {"type": "bigint", "not_null": True}

    lines = changes.change_diagram(head, Snapshot(objects)).splitlines()

    assert "    %% added table: audit" in lines
    assert "    %% removed: - table checkpoints" in lines
    assert '        bigint id "added"' in lines
    assert "    checkpoints {" not in lines


def test_change_diagram_without_changes_is_the_plain_diagram(head: Snapshot) -> None:
    (plain,) = mermaid_blocks(markdown.render(head)["README.md"])
    assert changes.change_diagram(head, head) == plain
