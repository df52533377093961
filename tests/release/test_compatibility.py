"""Two releases live at once, proven by the release check (issue 27's "Done when"): in a scratch
copy, a rename in two releases (docs/MIGRATIONS.md: expand with the dual-write helpers and a
backfill, then contract). The previous release starts on the expanded schema and its statements
run; a contract revision that drops a column the application's statements still use fails the
release, naming the statement and the revision; once workload/ stops using it, the release
passes; and the previous release's start-up check then refuses the contracted database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import uaip_db
from tests.conftest import HEAD, sql
from tests.release.conftest import commit_all
from uaip_db.backups import workload
from uaip_db.migrations import history, releases, runner, snapshots
from uaip_db.release.check import release_check
from uaip_db.release.report import FAIL, PASS, ReleaseReport
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig

EXPAND, CONTRACT = "e1a5e0000001", "c1a5e0000002"
REVISION = '''"""{doc}

Revision ID: {revision}
Revises: {down}
"""

from alembic import op

from uaip_db.ops import (
    rename_column_contract,
    rename_column_contract_undo,
    rename_column_expand,
    rename_column_expand_undo,
)

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None
{markers}


def upgrade() -> None:
    {upgrade}


def downgrade() -> None:
    {downgrade}
'''
RENAME = '"sessions", "project_name", "title"'
EXCEPTION = f'''
[[exception]]
revision = "{CONTRACT}"
rule = "ban-drop-column"
reason = "project_name: kept in title since the expand revision"
'''


def write_rename(server: ScratchServer, checkout: Path, restore_comment: str = "") -> None:
    """The two revisions; `restore_comment`: what the contract's downgrade says of project_name
    (what the old column had besides its values is the revision's to restore)."""
    versions = checkout / "migrations" / "versions"
    undo = f"rename_column_contract_undo(op, {RENAME})"
    if restore_comment:
        undo += f"\n    op.execute({restore_comment!r})"
    for revision, down, doc, markers, up, back in [
        (
            EXPAND,
            HEAD,
            "Rename sessions.project_name to title: expand",
            'phase = "expand"\ndestroys_data_on_downgrade = "sessions.title"',
            f"rename_column_expand(op, {RENAME})\n"
            "    op.execute(\"COMMENT ON COLUMN sessions.title IS 'The project name.'\")",
            f"rename_column_expand_undo(op, {RENAME})",
        ),
        (
            CONTRACT,
            EXPAND,
            "Rename sessions.project_name to title: contract",
            'phase = "contract"\ndestroys_data = "project_name: kept in title since the expand"',
            f"rename_column_contract(op, {RENAME})",
            undo,
        ),
    ]:
        (versions / f"{revision}_rename.py").write_text(
            REVISION.format(
                doc=doc, revision=revision, down=down, markers=markers, upgrade=up, downgrade=back
            ),
            encoding="utf-8",
        )
    exceptions = checkout / "migrations" / "lint-exceptions.toml"
    if EXCEPTION not in exceptions.read_text(encoding="utf-8"):
        with exceptions.open("a", encoding="utf-8") as file:
            file.write(EXCEPTION)
    snapshots.write(snapshots.build(server))


def stop_using_project_name(checkout: Path) -> None:
    """What the application's owners do once the new release is deployed everywhere."""
    for path in (checkout / "workload").glob("*.sql"):
        path.write_text(path.read_text().replace("project_name", "title"))


def check(database: DatabaseConfig, tmp_path: Path) -> tuple[ReleaseReport, dict[str, Any]]:
    report, _path = release_check(database, tmp_path / "release-backups", lambda _line: None)
    return report, {item.key: item for item in report.items}


def test_a_contract_revision_the_running_application_still_uses_fails_the_release(
    server: ScratchServer, checkout: Path, head_db: DatabaseConfig, tmp_path: Path
) -> None:
    write_rename(server, checkout)
    sql(head_db, "INSERT INTO sessions (user_id, project_name) VALUES ('u1', 'Churn model')")
    commit_all(checkout)

    report, items = check(head_db, tmp_path)
    previous = items["previous_release"]
    text = "\n".join(previous.body)
    assert previous.status == FAIL and report.verdict == FAIL
    # The report says which releases may run before, during and after this one.
    running = [r.version for r in releases.load() if releases.fit(r, HEAD, history.load()).runs]
    who = "\n".join(items["revisions"].body)
    assert f"- before: {', '.join(running)}" in who
    assert f"- during (after the expand revisions, at `{EXPAND}`): {', '.join(running)}" in who
    assert f"- after (at `{CONTRACT}`): none of the named releases, and the new release" in who
    # After the expand revision the previous release starts and its statements run.
    assert f"- after `{EXPAND}` (expand): start-up check accepts; its statements run" in text
    # The contract revision is named, with the statement and the file it is in.
    assert f"Contract revision `{CONTRACT}`: the application's statement" in text
    assert "INSERT INTO sessions (user_id, project_name)" in text and "workload/setup.sql" in text
    assert 'column "project_name" of relation "sessions" does not exist' in text
    assert "deploy the application that stops using it" in text
    assert any(failed.endswith("Previous release") for failed in report.failed())
    # Way B was run on the rehearsal copy: the contract's downgrade leaves project_name without
    # the comment it had, so the report does not offer it as it is printed.
    rollback = "\n".join(items["rollback"].body)
    assert "**Only A is possible.**" in rollback
    assert "Not possible as printed: on the rehearsal copy it failed" in rollback
    assert "column sessions.project_name: comment differs" in rollback

    # The downgrade restores the comment; the application's owners update workload/ (the new
    # release no longer uses the column).
    ((comment,),) = sql(
        head_db,
        "SELECT format('COMMENT ON COLUMN sessions.project_name IS %L', "
        "col_description('sessions'::regclass, attnum)) FROM pg_attribute "
        "WHERE attrelid = 'sessions'::regclass AND attname = 'project_name'",
    )
    write_rename(server, checkout, restore_comment=comment)
    stop_using_project_name(checkout)
    commit_all(checkout, "The application writes title")
    report, items = check(head_db, tmp_path)
    assert items["previous_release"].status == PASS, items["previous_release"].body
    assert report.verdict == PASS, [(i.title, i.body) for i in report.items if i.status == FAIL]
    # Both ways back were run or timed on the rehearsal copy.
    rollback = "\n".join(items["rollback"].body)
    assert "**Preferred: A**" in rollback  # B loses data too: the contract dropped project_name
    assert "On the rehearsal copy the restore took" in rollback
    assert f"and the schema it reached verified as `{HEAD}`" in rollback

    # Deployed: the database goes to the contract revision; the previous release, with its own
    # copy of the scripts, no longer starts on it and names the revision.
    runner.upgrade(head_db, "head")
    assert sql(head_db, "SELECT title FROM sessions WHERE user_id = 'u1'") == [("Churn model",)]
    with pytest.raises(uaip_db.CheckFailed, match=f"{CONTRACT} \\(contract\\)"):
        uaip_db.check_migrations(head_db, scripts=history.load().as_of(HEAD))


def test_the_statements_are_named_as_pgbench_numbers_them() -> None:
    script = (
        "-- a comment\n\\set stage random(1, 5)\n\nINSERT INTO t (a)\nSELECT :stage;\nSELECT 1;\n"
    )
    assert workload.commands(script) == [
        "\\set stage random(1, 5)",
        "INSERT INTO t (a) SELECT :stage;",
        "SELECT 1;",
    ]


def test_the_probe_names_the_failing_statement_and_its_script(head_db: DatabaseConfig) -> None:
    assert workload.probe(head_db) == []
    sql(head_db, "ALTER TABLE conversation_history RENAME COLUMN role TO speaker")
    (broken,) = workload.probe(head_db)
    assert broken.script == "workload/conversation_history.sql"
    assert broken.statement.startswith("INSERT INTO conversation_history (session_id")
    assert 'column "role" of relation "conversation_history" does not exist' in broken.error
