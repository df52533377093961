"""The rollback plan: the downgrade SQL keeps its guards, and each way back names its cost."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from tests.conftest import EMAIL, WIDEN, sql
from tests.release.conftest import psql_file
from uaip_db.migrations import applied, history, runner
from uaip_db.release.rollback import downgrade_cost, rollback_item
from uaip_db.settings import DatabaseConfig


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
    assert applied.current_revisions(head_db) == (WIDEN,)
    assert sql(head_db, "SELECT count(*) FROM sessions") == [(2,)]

    sql(head_db, "DELETE FROM sessions WHERE length(user_id) > 255")
    done = psql_file(head_db, rollback)
    assert done.returncode == 0, done.stderr
    assert user_id_type(head_db) == "character varying(255)"
    assert applied.current_revisions(head_db) == (EMAIL,)
    assert sql(head_db, "SELECT user_id FROM sessions") == [("short",)]


def revision(name: str, **markers: str) -> history.Revision:
    return history.Revision(name, ["a"], f"Revision {name}", f"/x/{name}.py", **markers)


BACKUP = SimpleNamespace(path=Path("/backups/b1"), manifest=SimpleNamespace(created_at="T1"))


def test_an_irreversible_revision_leaves_only_the_backup() -> None:
    pending = [revision("b", irreversible="the old format cannot be rebuilt")]
    cost = downgrade_cost("a", "b", pending, "")
    item = rollback_item("a", pending, BACKUP, "uaip", "", cost)
    assert item.status == "PASS"
    assert "**Only A is possible.**" in item.body
    assert "- Not possible: `b` is irreversible: the old format cannot be rebuilt." in item.body
    assert item.brief == "A: restore (loses every write since the backup)"


def test_no_backup_and_no_downgrade_is_no_way_back() -> None:
    pending = [revision("b", irreversible="no")]
    item = rollback_item("a", pending, None, "uaip", "", downgrade_cost("a", "b", pending, ""))
    assert item.status == "FAIL" and item.body[-1] == "There is no way back."


def test_a_declared_loss_prefers_the_backup_and_says_both_costs() -> None:
    pending = [revision("b", destroys_data_on_downgrade="sessions.email")]
    cost = downgrade_cost("a", "b", pending, "")
    item = rollback_item("a", pending, BACKUP, "uaip", "-- nothing", cost)
    text = "\n".join(item.body)
    assert "**Preferred: A**" in text
    assert "discards every write made after it was taken (T1), in every table" in text
    assert "Declared by the revisions: `b` drops sessions.email" in text
    assert "`inv db.restore /backups/b1 --target uaip --yes --confirm-db uaip`" in text
