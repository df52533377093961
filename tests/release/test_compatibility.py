"""Two releases live at once, proven by the release check (issue 27's "Done when"): in a scratch
copy, a rename in two releases (docs/MIGRATIONS.md: expand with the dual-write helpers and a
backfill, then contract). The previous release starts on the expanded schema and its statements
run; a contract revision that drops a column the application's statements still use fails the
release, naming the statement and the revision; once workload/ stops using it, the release
passes; and the previous release's start-up check then refuses the contracted database."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import uaip_db
from tests.conftest import FREE_COLUMN, HEAD, sql
from tests.migrations.test_dual_write import REVISION
from tests.release.conftest import commit_all
from uaip_db.backups import workload
from uaip_db.migrations import history, releases, runner, snapshots
from uaip_db.release.check import release_check
from uaip_db.release.report import FAIL, PASS, ReleaseReport
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig

EXPAND, CONTRACT = "e1a5e0000001", "c1a5e0000002"
OLD, NEW = FREE_COLUMN.name, f"{FREE_COLUMN.name}_renamed"
RENAME = f'"sessions", "{OLD}", "{NEW}"'
EXCEPTION = f'''
[[exception]]
revision = "{CONTRACT}"
rule = "ban-drop-column"
reason = "{OLD}: kept in {NEW} since the expand revision"
'''
# The application's sessions, written with the column the rename drops (workload/setup.sql).
SETUP = (
    f"INSERT INTO sessions (user_id, {OLD})\n"
    "SELECT 'uaip-load-' || n, 'rehearsal load' FROM generate_series(0, %(clients)s - 1) AS n;\n"
)


def write_rename(server: ScratchServer, checkout: Path, restore_comment: str = "") -> None:
    """The two revisions; `restore_comment`: what the contract's downgrade says of the old
    column (what it had besides its values is the revision's to restore)."""
    versions = checkout / "migrations" / "versions"
    undo = f"rename_column_contract_undo(op, {RENAME})"
    if restore_comment:
        undo += f"\n    op.execute({restore_comment!r})"
    for revision, down, doc, markers, up, back in [
        (
            EXPAND,
            HEAD,
            f"Rename sessions.{OLD} to {NEW}: expand",
            f'phase = "expand"\ndestroys_data_on_downgrade = "sessions.{NEW}"',
            f"rename_column_expand(op, {RENAME})\n"
            f"    op.execute(\"COMMENT ON COLUMN sessions.{NEW} IS 'The project name.'\")",
            f"rename_column_expand_undo(op, {RENAME})",
        ),
        (
            CONTRACT,
            EXPAND,
            f"Rename sessions.{OLD} to {NEW}: contract",
            f'phase = "contract"\ndestroys_data = "{OLD}: kept in {NEW} since the expand"',
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


def start_writing_the_old_column(checkout: Path) -> None:
    (checkout / "workload" / "setup.sql").write_text(SETUP)


def stop_using_the_old_column(checkout: Path) -> None:
    """What the application's owners do once the new release is deployed everywhere."""
    for path in (checkout / "workload").glob("*.sql"):
        path.write_text(re.sub(rf"\b{OLD}\b", NEW, path.read_text()))


def check(database: DatabaseConfig, tmp_path: Path) -> tuple[ReleaseReport, dict[str, Any]]:
    report, _path = release_check(database, tmp_path / "release-backups", lambda _line: None)
    return report, {item.key: item for item in report.items}


def test_a_contract_revision_the_running_application_still_uses_fails_the_release(
    server: ScratchServer, checkout: Path, head_db: DatabaseConfig, tmp_path: Path
) -> None:
    write_rename(server, checkout)
    start_writing_the_old_column(checkout)
    sql(head_db, f"INSERT INTO sessions (user_id, {OLD}) VALUES ('u1', 'Churn model')")
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
    assert f"INSERT INTO sessions (user_id, {OLD})" in text and "workload/setup.sql" in text
    assert f'column "{OLD}" of relation "sessions" does not exist' in text
    assert "deploy the application that stops using it" in text
    assert any(failed.endswith("Previous release") for failed in report.failed())
    # Way B was run on the rehearsal copy: the contract's downgrade leaves the old column without
    # the comment it had, so the report does not offer it as it is printed.
    rollback = "\n".join(items["rollback"].body)
    assert "**Only A is possible.**" in rollback
    assert "Not possible as printed: on the rehearsal copy it failed" in rollback
    assert f"column sessions.{OLD}: comment " in rollback  # "differs", or both values if short

    # So the deploy goes in its order: the expand revision first, then the new release
    # everywhere, whose statements no longer use the column (the application's owners update
    # workload/), then a release check of the contract revision; its downgrade now restores the
    # comment.
    runner.upgrade(head_db, EXPAND)
    ((comment,),) = sql(
        head_db,
        f"SELECT format('COMMENT ON COLUMN sessions.{OLD} IS %L', "
        "col_description('sessions'::regclass, attnum)) FROM pg_attribute "
        f"WHERE attrelid = 'sessions'::regclass AND attname = '{OLD}'",
    )
    write_rename(server, checkout, restore_comment=comment)
    stop_using_the_old_column(checkout)
    commit_all(checkout, f"The application writes {NEW}")
    report, items = check(head_db, tmp_path)
    assert items["previous_release"].status == PASS, items["previous_release"].body
    assert report.verdict == PASS, [(i.title, i.body) for i in report.items if i.status == FAIL]
    # Both ways back were run or timed on the rehearsal copy.
    rollback = "\n".join(items["rollback"].body)
    assert "**Preferred: B**" in rollback  # the contract's downgrade brings the column back
    assert "On the rehearsal copy the restore took" in rollback
    assert f"and the schema it reached verified as `{EXPAND}`" in rollback

    # Deployed: the database goes to the contract revision; the previous release, with its own
    # copy of the scripts, no longer starts on it and names the revision.
    runner.upgrade(head_db, "head")
    assert sql(head_db, f"SELECT {NEW} FROM sessions WHERE user_id = 'u1'") == [("Churn model",)]
    with pytest.raises(uaip_db.CheckFailed, match=f"{CONTRACT} \\(contract\\)"):
        uaip_db.check_migrations(head_db, scripts=history.load().as_of(HEAD))


def test_statements_that_fail_before_the_release_are_not_blamed_on_a_revision(
    server: ScratchServer, checkout: Path, head_db: DatabaseConfig, tmp_path: Path
) -> None:
    """workload/ already written for the new release (the renamed column) while the database
    is before the expand revision: the statement fails before any revision, so it is workload/
    that is wrong, not the expand revision that "breaks the running application"."""
    write_rename(server, checkout)
    start_writing_the_old_column(checkout)
    stop_using_the_old_column(checkout)
    commit_all(checkout)
    _report, items = check(head_db, tmp_path)
    text = "\n".join(items["previous_release"].body)
    assert items["previous_release"].status == FAIL
    assert "workload/ is not what the application running now runs: before any revision" in text
    assert f'column "{NEW}" of relation "sessions" does not exist' in text
    assert "- before the release: 1 statement(s) fail" in text
    assert f"Expand revision `{EXPAND}` breaks" not in text


def test_the_statements_are_named_as_pgbench_numbers_them() -> None:
    script = (
        "-- a comment\n\\set stage random(1, 5)\n\nINSERT INTO t (a)\nSELECT :stage;\nSELECT 1;\n"
    )
    assert workload.commands(script) == [
        "\\set stage random(1, 5)",
        "INSERT INTO t (a) SELECT :stage;",
        "SELECT 1;",
    ]


def test_the_probe_names_the_failing_statement_and_its_script(
    checkout: Path, head_db: DatabaseConfig
) -> None:
    assert workload.probe(head_db) == []
    start_writing_the_old_column(checkout)
    sql(head_db, f"ALTER TABLE sessions RENAME COLUMN {OLD} TO {NEW}")
    (broken,) = workload.probe(head_db)
    assert broken.script == "workload/setup.sql"
    assert broken.statement.startswith(f"INSERT INTO sessions (user_id, {OLD})")
    assert f'column "{OLD}" of relation "sessions" does not exist' in broken.error
