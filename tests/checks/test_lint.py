"""db.lint: squawk plus our own rules, with reviewed exceptions."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from tests.conftest import FREE_COLUMN, HEAD, run_inv, sql, write_revision
from uaip_db.checks import lint
from uaip_db.errors import CheckFailed, SettingsError
from uaip_db.migrations import history, runner, snapshots
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig

# A column of sessions the revisions here index, constrain, narrow and drop (project_name).
FREE = FREE_COLUMN.name


def rules_for(revision: str) -> set[str]:
    findings, _notes, _docs = lint.lint()
    return {f.rule for f in findings if f.revision == revision}


def add_and_snapshot(server: ScratchServer, checkout: Path, **revision: object) -> None:
    write_revision(checkout / "migrations" / "versions", **revision)  # type: ignore[arg-type]
    snapshots.write(snapshots.build(server))


def test_the_repository_passes() -> None:
    result = run_inv("db.lint")
    assert result.returncode == 0, result.stderr
    assert "Every revision passes" in result.stdout


def test_each_revision_renders_on_its_own() -> None:
    script = history.load().get("8f2b6c1d4e7a")
    sql = lint.render_sql(script)
    assert "ADD COLUMN IF NOT EXISTS email" in sql and "CREATE TABLE sessions" not in sql
    assert "SET lock_timeout" in sql
    assert "DROP INDEX CONCURRENTLY" in lint.render_sql(script, downgrade=True)


def test_a_blocking_index_on_an_existing_table(server: ScratchServer, checkout: Path) -> None:
    add_and_snapshot(
        server,
        checkout,
        revision="1d0000000001",
        down_revision=HEAD,
        upgrade=[f"CREATE INDEX idx_sessions_project ON sessions ({FREE})"],
        downgrade=["DROP INDEX idx_sessions_project"],
    )
    assert "blocking-index" in rules_for("1d0000000001")
    assert "require-concurrent-index-creation" in rules_for("1d0000000001")


def test_unacknowledged_data_loss_both_ways(server: ScratchServer, checkout: Path) -> None:
    add_and_snapshot(
        server,
        checkout,
        revision="1d0000000002",
        down_revision=HEAD,
        upgrade=[
            f"ALTER TABLE sessions DROP COLUMN {FREE}",
            "ALTER TABLE checkpoints ADD COLUMN note text",
        ],
        downgrade=[
            "ALTER TABLE checkpoints DROP COLUMN note",
            f"ALTER TABLE sessions ADD COLUMN {FREE} {FREE_COLUMN.type}",
        ],
    )
    findings, _, _ = lint.lint()
    messages = [f.message for f in findings if f.rule == "unacknowledged-data-loss"]
    assert any(f"the upgrade drops sessions.{FREE}" in m for m in messages)
    assert any("the downgrade drops checkpoints.note" in m for m in messages)


def test_narrowing_and_not_null_without_default(server: ScratchServer, checkout: Path) -> None:
    add_and_snapshot(
        server,
        checkout,
        revision="1d0000000003",
        down_revision=HEAD,
        upgrade=[
            f"ALTER TABLE sessions ALTER COLUMN {FREE} TYPE varchar({FREE_COLUMN.length - 1})",
            "ALTER TABLE checkpoints ALTER COLUMN stage_number DROP NOT NULL",
            "ALTER TABLE sessions ADD COLUMN tenant text",
            "ALTER TABLE sessions ALTER COLUMN tenant SET NOT NULL",
        ],
        downgrade=[
            "ALTER TABLE sessions DROP COLUMN tenant",
            "ALTER TABLE checkpoints ALTER COLUMN stage_number SET NOT NULL",
            f"ALTER TABLE sessions ALTER COLUMN {FREE} TYPE {FREE_COLUMN.type}",
        ],
        markers='destroys_data_on_downgrade = "sessions.tenant"',
    )
    findings, _, _ = lint.lint()
    found = {(f.rule, f.message.split(";")[0]) for f in findings if f.revision == "1d0000000003"}
    assert (
        "type-narrowing",
        f"the upgrade narrows sessions.{FREE} from {FREE_COLUMN.type} "
        f"to character varying({FREE_COLUMN.length - 1})",
    ) in found
    assert (
        "not-null-without-default",
        "sessions.tenant becomes NOT NULL with no default and no backfill",
    ) in found


def test_an_empty_downgrade_and_since(server: ScratchServer, checkout: Path) -> None:
    add_and_snapshot(
        server,
        checkout,
        revision="1d0000000004",
        down_revision=HEAD,
        upgrade=["COMMENT ON TABLE sessions IS 'x'"],
        downgrade=[],
    )
    assert "empty-downgrade" in rules_for("1d0000000004")
    result = run_inv("db.lint", "--since", HEAD, env={"UAIP_DB_ROOT": str(checkout)})
    assert result.returncode == 1
    assert "1d0000000004 (Test revision): [empty-downgrade]" in result.stderr
    assert "8f2b6c1d4e7a" not in result.stderr


def test_a_revision_without_a_snapshot(checkout: Path) -> None:
    write_revision(
        checkout / "migrations" / "versions",
        "1d0000000005",
        HEAD,
        ["COMMENT ON TABLE sessions IS 'x'"],
        ["COMMENT ON TABLE sessions IS NULL"],
    )
    with pytest.raises(
        CheckFailed, match=r"does not cover revision 1d0000000005 .*inv db\.snapshots"
    ):
        lint.lint()


def test_an_exception_needs_a_reason(checkout: Path) -> None:
    lint.exceptions_file().write_text('[[exception]]\nrule = "blocking-index"\n')
    with pytest.raises(SettingsError, match="needs a rule and a reason"):
        lint.load_exceptions()


def test_an_exception_silences_one_rule_for_one_revision(
    server: ScratchServer, checkout: Path
) -> None:
    add_and_snapshot(
        server,
        checkout,
        revision="1d0000000006",
        down_revision=HEAD,
        upgrade=["COMMENT ON TABLE sessions IS 'x'"],
        downgrade=[],
    )
    with lint.exceptions_file().open("a") as file:
        file.write(
            '\n[[exception]]\nrevision = "1d0000000006"\nrule = "empty-downgrade"\n'
            'reason = "comment only"\n'
        )
    assert "empty-downgrade" not in rules_for("1d0000000006")


def test_blocking_forms_point_at_the_online_helpers(server: ScratchServer, checkout: Path) -> None:
    add_and_snapshot(
        server,
        checkout,
        revision="1d0000000007",
        down_revision=HEAD,
        upgrade=[
            "ALTER TABLE sessions ADD COLUMN tenant text",
            f"UPDATE sessions SET tenant = {FREE}",
            "ALTER TABLE sessions ALTER COLUMN tenant SET NOT NULL",
            "ALTER TABLE checkpoints ADD CONSTRAINT checkpoints_session_again "
            "FOREIGN KEY (session_id) REFERENCES sessions (session_id)",
        ],
        downgrade=[
            "ALTER TABLE checkpoints DROP CONSTRAINT checkpoints_session_again",
            "ALTER TABLE sessions DROP COLUMN tenant",
        ],
        markers='destroys_data_on_downgrade = "sessions.tenant"',
    )
    findings, _, _ = lint.lint()
    messages = {f.rule: f.message for f in findings if f.revision == "1d0000000007"}
    assert "uaip_db.ops.backfill" in messages["whole-table-update"]
    assert "existing table sessions" in messages["whole-table-update"]
    assert "uaip_db.ops.set_not_null" in messages["adding-not-nullable-field"]
    assert "uaip_db.ops.add_foreign_key" in messages["adding-foreign-key-constraint"]


def test_the_guides_online_example_passes(server: ScratchServer, checkout: Path) -> None:
    from tests.migrations.test_backfill import EXAMPLE, write_example

    write_example(checkout)
    snapshots.write(snapshots.build(server))
    assert rules_for(EXAMPLE) == set()
    sql = lint.render_sql(history.load().get(EXAMPLE))
    assert lint.whole_table_updates(sql, {"conversation_history"}) == []


def test_a_session_level_set_points_at_set_local(server: ScratchServer, checkout: Path) -> None:
    add_and_snapshot(
        server,
        checkout,
        revision="5e5510000001",
        down_revision=HEAD,
        upgrade=[
            "SET session_replication_role = replica",
            "SET LOCAL lock_timeout = '2s'",
            f"UPDATE sessions\nSET {FREE} = 'active' WHERE false",
        ],
        downgrade=[],
    )
    findings, _notes, _docs = lint.lint()
    found = [f for f in findings if f.revision == "5e5510000001" and f.rule == "session-set"]
    assert len(found) == 1, found
    assert "SET LOCAL session_replication_role" in found[0].message


def test_a_revision_that_changes_a_bookkeeping_table(server: ScratchServer, checkout: Path) -> None:
    """Issue 24 item 7: the project's tables are not a revision's to drop or alter. (A drop
    is refused by the runner, so the snapshot could not be built: ALTER and TRUNCATE here.)"""
    add_and_snapshot(
        server,
        checkout,
        revision="5e7d00000107",
        down_revision=HEAD,
        upgrade=[
            "ALTER TABLE public.uaip_db_migration_ledger ADD COLUMN note text",
            "TRUNCATE uaip_db_migration_ledger",
            "CREATE TABLE uaip_scratch (id int)",
            "DROP TABLE uaip_scratch",
        ],
        downgrade=[],
    )
    findings, _notes, _docs = lint.lint()
    found = [f.message for f in findings if f.rule == "bookkeeping-table"]
    assert len(found) == 2, found
    assert found[0].startswith("ALTER TABLE uaip_db_migration_ledger: "), found
    assert found[1].startswith("TRUNCATE uaip_db_migration_ledger: "), found


def test_bookkeeping_changes_reads_statements_not_function_bodies() -> None:
    sql = (
        "SET lock_timeout = '1s';\nBEGIN;\n"
        "DROP TABLE IF EXISTS public.uaip_db_backfill_progress, sessions CASCADE;\n"
        'ALTER TABLE ONLY "alembic_version" ADD COLUMN x int;\n'
        "DROP TABLE sessions;\n"
        "CREATE FUNCTION f() RETURNS void AS $$ BEGIN TRUNCATE uaip_db_x; END $$ "
        "LANGUAGE plpgsql;\n-- DROP TABLE uaip_db_y;\nCOMMIT;\n"
    )
    assert lint.bookkeeping_changes(sql) == [
        "ALTER TABLE alembic_version",
        "DROP TABLE uaip_db_backfill_progress",
    ]


def line_of(path: Path, text: str) -> int:
    """The 1-based line of `path` that holds `text`."""
    lines = path.read_text().splitlines()
    return next(number for number, line in enumerate(lines, start=1) if text in line)


def test_a_finding_names_the_file_the_line_and_the_statement(
    server: ScratchServer, checkout: Path
) -> None:
    """Issue 25 item 8: not `line 8` of a rendered file that is gone, but the revision file,
    the line of the op call there, and the statement itself (one line, shortened)."""
    long_comment = "x" * 300
    add_and_snapshot(
        server,
        checkout,
        revision="1d0000000011",
        down_revision=HEAD,
        upgrade=[
            f"ALTER TABLE sessions ADD CONSTRAINT sessions_long CHECK ({FREE} <> '{long_comment}')",
            f"CREATE INDEX idx_sessions_project ON sessions ({FREE})",
            "ALTER TABLE checkpoints ADD CONSTRAINT checkpoints_session_again "
            "FOREIGN KEY (session_id) REFERENCES sessions (session_id)",
        ],
        downgrade=[],
    )
    path = checkout / "migrations" / "versions" / "1d0000000011_test.py"
    findings, _, _ = lint.lint()
    found = {f.rule: f for f in findings if f.revision == "1d0000000011"}
    index = found["require-concurrent-index-creation"]
    assert index.file == "migrations/versions/1d0000000011_test.py"
    assert index.line == line_of(path, "idx_sessions_project")
    assert index.statement == f"CREATE INDEX idx_sessions_project ON sessions ({FREE})"
    assert not index.message.startswith("line ")
    assert found["blocking-index"].line == index.line
    foreign_key = found["adding-foreign-key-constraint"]
    assert foreign_key.line == line_of(path, "checkpoints_session_again")
    assert foreign_key.statement.startswith("ALTER TABLE checkpoints ADD CONSTRAINT")
    assert found["empty-downgrade"].line == line_of(path, "def downgrade")
    long = next(f for f in findings if "sessions_long" in f.statement)
    assert long.line == line_of(path, "sessions_long")
    assert long.statement.startswith("ALTER TABLE sessions ADD CONSTRAINT sessions_long CHECK")
    assert len(long.statement) == 120 and long.statement.endswith("...")

    result = run_inv("db.lint", "--since", HEAD, env={"UAIP_DB_ROOT": str(checkout)})
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    headline = next(i for i, line in enumerate(lines) if "[blocking-index]" in line)
    assert f"(migrations/versions/1d0000000011_test.py:{index.line})" in lines[headline]
    assert lines[headline + 1] == f"    CREATE INDEX idx_sessions_project ON sessions ({FREE})"
    as_json = run_inv("db.lint", "--since", HEAD, "--json", env={"UAIP_DB_ROOT": str(checkout)})
    entries = [e for e in json.loads(as_json.stdout)["findings"] if e["rule"] == "blocking-index"]
    assert entries[0]["file"] == "migrations/versions/1d0000000011_test.py"
    assert entries[0]["line"] == index.line
    assert entries[0]["statement"] == index.statement


def test_a_check_and_a_partial_index_point_at_the_helpers_that_fit(
    server: ScratchServer, checkout: Path
) -> None:
    add_and_snapshot(
        server,
        checkout,
        revision="1d0000000012",
        down_revision=HEAD,
        upgrade=[
            f"ALTER TABLE sessions ADD CONSTRAINT sessions_project_named CHECK ({FREE} <> '')",
            f"CREATE INDEX idx_sessions_active ON sessions ({FREE}) WHERE {FREE} <> 'x'",
        ],
        downgrade=[
            "DROP INDEX idx_sessions_active",
            "ALTER TABLE sessions DROP CONSTRAINT sessions_project_named",
        ],
    )
    findings, _, _ = lint.lint()
    messages = {f.rule: f.message for f in findings if f.revision == "1d0000000012"}
    check = messages["constraint-missing-not-valid"]
    assert "uaip_db.ops.add_check_constraint" in check
    assert "add_foreign_key" not in check and "set_not_null" not in check
    for rule in ("require-concurrent-index-creation", "blocking-index"):
        assert "uaip_db.ops.create_index_concurrently(" in messages[rule]
        assert 'where="..."' in messages[rule]


ONLINE_CHECK_AND_PARTIAL_INDEX = '''"""Online check and partial index

Revision ID: 1d0000000013
Revises: {head}
"""
from alembic import op

from uaip_db.ops import (
    add_check_constraint,
    create_index_concurrently,
    drop_check_constraint,
    drop_index_concurrently,
)

revision = "1d0000000013"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_check_constraint(op, "sessions", "sessions_project_named", "{free} <> ''")
    create_index_concurrently(
        op, "idx_sessions_active", "sessions", ["{free}"], where="{free} <> 'x'"
    )


def downgrade() -> None:
    drop_index_concurrently(op, "idx_sessions_active")
    drop_check_constraint(op, "sessions", "sessions_project_named")
'''


def test_following_the_advice_lints_clean_and_leaves_nothing_invalid(
    server: ScratchServer, checkout: Path, head_db: DatabaseConfig
) -> None:
    """What the advice says to write passes squawk and our rules, and runs (again) online."""
    path = checkout / "migrations" / "versions" / "1d0000000013_online.py"
    path.write_text(ONLINE_CHECK_AND_PARTIAL_INDEX.format(head=HEAD, free=FREE))
    snapshots.write(snapshots.build(server))
    assert rules_for("1d0000000013") == set()

    state = (
        "SELECT (SELECT string_agg(convalidated::text, ',') FROM pg_constraint "
        "        WHERE conname = 'sessions_project_named'), "
        "       (SELECT string_agg(i.indisvalid::text || ':' || "
        "               pg_get_expr(i.indpred, i.indrelid), ',') "
        "        FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid "
        "        WHERE c.relname = 'idx_sessions_active')"
    )
    sql(head_db, f"INSERT INTO sessions (user_id, {FREE}) VALUES ('u', 'p')")
    runner.upgrade(head_db)
    assert sql(head_db, state) == [("true", f"true:(({FREE})::text <> 'x'::text)")]
    # Safe to run again: the version row moved back, the constraint and index stayed.
    sql(head_db, f"UPDATE alembic_version SET version_num = '{HEAD}'")
    runner.upgrade(head_db)
    assert sql(head_db, state) == [("true", f"true:(({FREE})::text <> 'x'::text)")]
    with pytest.raises(Exception, match="sessions_project_named"):
        sql(head_db, f"UPDATE sessions SET {FREE} = ''")
    runner.downgrade(head_db, HEAD)
    assert sql(head_db, state) == [(None, None)]


def test_a_row_that_breaks_the_check_fails_the_upgrade_and_leaves_nothing_invalid(
    server: ScratchServer, checkout: Path, head_db: DatabaseConfig
) -> None:
    path = checkout / "migrations" / "versions" / "1d0000000013_online.py"
    path.write_text(ONLINE_CHECK_AND_PARTIAL_INDEX.format(head=HEAD, free=FREE))
    sql(head_db, f"INSERT INTO sessions (user_id, {FREE}) VALUES ('u', '')")
    with pytest.raises(Exception, match="sessions_project_named"):
        runner.upgrade(head_db)
    # The row is fixed; running the upgrade again finishes it.
    sql(head_db, f"UPDATE sessions SET {FREE} = 'p'")
    runner.upgrade(head_db)
    assert sql(
        head_db,
        "SELECT count(*) FROM pg_constraint WHERE NOT convalidated AND conrelid = "
        "'sessions'::regclass",
    ) == [(0,)]
    assert sql(head_db, "SELECT count(*) FROM pg_index WHERE NOT indisvalid") == [(0,)]


def test_a_finding_an_exception_would_accept_shows_the_entry(
    server: ScratchServer, checkout: Path
) -> None:
    """A declared contract step's drop: the entry to add, its reason from destroys_data."""
    reason = f'{FREE} is unused since the "v2" release'
    add_and_snapshot(
        server,
        checkout,
        revision="1d0000000014",
        down_revision=HEAD,
        upgrade=[f"ALTER TABLE sessions DROP COLUMN {FREE}"],
        downgrade=[f"ALTER TABLE sessions ADD COLUMN {FREE} {FREE_COLUMN.type}"],
        markers=f"destroys_data = {reason!r}",
    )
    findings, _, docs = lint.lint()
    drop = next(f for f in findings if f.rule == "ban-drop-column")
    entry = tomllib.loads(drop.exception)["exception"]
    assert entry == [{"revision": "1d0000000014", "rule": "ban-drop-column", "reason": reason}]
    assert "    to accept it, add to migrations/lint-exceptions.toml:" in drop.text(docs)
    assert "        [[exception]]" in drop.text(docs).splitlines()

    result = run_inv("db.lint", "--since", HEAD, "--json", env={"UAIP_DB_ROOT": str(checkout)})
    reported = [e for e in json.loads(result.stdout)["findings"] if e["rule"] == "ban-drop-column"]
    assert reported[0]["exception"] == drop.exception
    # What it shows is what silences it; a helper's finding shows none.
    with lint.exceptions_file().open("a") as file:
        file.write("\n" + drop.exception + "\n")
    assert "ban-drop-column" not in rules_for("1d0000000014")


def test_an_entry_without_a_reason_is_left_for_the_reviewer(
    server: ScratchServer, checkout: Path
) -> None:
    add_and_snapshot(
        server,
        checkout,
        revision="1d0000000015",
        down_revision=HEAD,
        upgrade=[
            f"CREATE INDEX idx_sessions_project ON sessions ({FREE})",
            f"ALTER TABLE sessions ALTER COLUMN {FREE} TYPE varchar({FREE_COLUMN.length + 1})",
        ],
        downgrade=[
            "DROP INDEX idx_sessions_project",
            f"ALTER TABLE sessions ALTER COLUMN {FREE} TYPE {FREE_COLUMN.type}",
        ],
    )
    findings, _, _ = lint.lint()
    found = {f.rule: f for f in findings if f.revision == "1d0000000015"}
    assert found["blocking-index"].exception == ""
    robust = found["changing-column-type"].exception
    assert tomllib.loads(robust)["exception"][0]["reason"] == ""
    with lint.exceptions_file().open("a") as file:
        file.write("\n" + robust + "\n")
    with pytest.raises(SettingsError, match="needs a rule and a reason"):
        lint.load_exceptions()


def test_lint_json_carries_the_notes_and_a_stale_snapshot_is_an_error_object(
    server: ScratchServer, checkout: Path
) -> None:
    """`db.lint --json`: stdout is the JSON (findings and notes) or, when it could not lint, an
    error object with the one line stderr gets too."""
    add_and_snapshot(
        server,
        checkout,
        revision="1d0000000016",
        down_revision=HEAD,
        upgrade=[
            "ALTER TABLE checkpoints ADD COLUMN zz_note text",
            "COMMENT ON COLUMN checkpoints.zz_note IS 'A note.'",
        ],
        downgrade=["ALTER TABLE checkpoints DROP COLUMN zz_note"],
    )
    result = run_inv("db.lint", "--json", env={"UAIP_DB_ROOT": str(checkout)})
    data = json.loads(result.stdout)
    assert data["passed"] is (result.returncode == 0)
    assert any("1d0000000016" in note for note in data["notes"]), data["notes"]
    revision = checkout / "migrations" / "versions" / "1d0000000016_test.py"
    revision.write_text(revision.read_text() + "\n# edited after its snapshot\n")
    stale = run_inv("db.lint", "--json", env={"UAIP_DB_ROOT": str(checkout)})
    assert stale.returncode == 1
    assert json.loads(stale.stdout) == {"error": stale.stderr.strip(), "exit_code": 1}
    assert "snapshot" in stale.stderr and len(stale.stderr.strip().splitlines()) <= 2
