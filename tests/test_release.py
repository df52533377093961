"""Backups before change, rehearsals and the release report, as the tasks run them."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    COMMENTS,
    EMAIL,
    FREE_COLUMN,
    HEAD,
    WIDEN,
    as_release_1_2,
    copy_of_the_checkout,
    put_behind,
    run_inv,
    sql,
    write_revision,
)
from tests.release.conftest import commit_all, git
from uaip_db.backups.rehearse import STATEMENTS_SHOWN
from uaip_db.migrations import applied, runner, snapshots
from uaip_db.migrations.baseline import BASELINE_REVISION
from uaip_db.release.check import LOCKS_SHOWN
from uaip_db.servers.scratch import ScratchServer, child_env
from uaip_db.settings import DatabaseConfig


@pytest.fixture
def committed(checkout: Path) -> Path:
    """The scratch checkout as a git repository with everything committed: a clean release."""
    commit_all(checkout)
    return checkout


def test_upgrade_with_backup_takes_a_verified_backup_first(
    behind_db: DatabaseConfig, tmp_path: Path
) -> None:
    result = run_inv(
        "db.upgrade", "--backup", database=behind_db, env={"UAIP_BACKUP_DIR": str(tmp_path)}
    )
    assert result.returncode == 0, result.stderr
    assert "proven restorable" in result.stdout
    assert result.stdout.index("proven restorable") < result.stdout.index(f"applied {HEAD}")
    assert len(list(tmp_path.glob("*/manifest.json"))) == 1


def test_a_failing_backup_stops_the_change(
    behind_db: DatabaseConfig, behind_revision: str, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    result = run_inv(
        "db.upgrade", "--backup", database=behind_db, env={"UAIP_BACKUP_DIR": str(blocked)}
    )
    assert result.returncode != 0
    assert applied.current_revisions(behind_db) == (behind_revision,)


def test_rehearse_restores_upgrades_and_leaves_the_source_alone(
    at_widen: DatabaseConfig, tmp_path: Path
) -> None:
    env = {"UAIP_BACKUP_DIR": str(tmp_path)}
    assert run_inv("db.backup", database=at_widen, env=env).returncode == 0
    result = run_inv("db.rehearse", database=at_widen, env=env)
    assert result.returncode == 0, result.stderr
    assert f"applied {COMMENTS}" in result.stdout
    assert f"locks held by {COMMENTS}: ShareUpdateExclusiveLock on checkpoints" in result.stdout
    assert "Rehearsal passed" in result.stdout
    assert applied.current_revisions(at_widen) == (WIDEN,)


def test_rehearse_of_a_damaged_backup_never_calls_it_verified(
    behind_db: DatabaseConfig, tmp_path: Path
) -> None:
    env = {"UAIP_BACKUP_DIR": str(tmp_path)}
    assert run_inv("db.backup", database=behind_db, env=env).returncode == 0
    (dump,) = tmp_path.glob("*/dump.pgdump")
    data = dump.read_bytes()
    dump.write_bytes(data[: len(data) // 2])
    result = run_inv("db.rehearse", database=behind_db, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "is damaged" in result.stderr
    assert "verified" not in result.stdout


def test_rehearse_without_a_backup(behind_db: DatabaseConfig, tmp_path: Path) -> None:
    result = run_inv("db.rehearse", database=behind_db, env={"UAIP_BACKUP_DIR": str(tmp_path)})
    assert result.returncode == 2 and "run `inv db.backup` first" in result.stderr


def test_release_check_writes_a_report_to_sign(
    at_widen: DatabaseConfig, tmp_path: Path, checkout: Path
) -> None:
    commit_all(checkout)  # release 1.2.0's history, committed
    env = {"UAIP_BACKUP_DIR": str(tmp_path), "UAIP_DB_ROOT": str(checkout)}
    result = run_inv("release.check", database=at_widen, env=env)
    assert result.returncode == 0, result.stderr
    reports = list((checkout / "reports").glob("release-*.md"))
    assert len(reports) == 1
    report = reports[0].read_text()
    assert "Overall: **PASS**" in report
    assert f"1. `{COMMENTS}` Describe every table and column with comments" in report
    assert "COMMENT ON TABLE sessions IS" in report
    assert "sessions: ~ comments added on the table and 10 columns" in report
    assert "Files checked against the manifest (sha256), then restored" in report
    assert f"applied {COMMENTS}" in report and "verify and check: passed" in report
    assert "## 7. Rollback plan: PASS" in report and "COMMENT ON TABLE sessions IS NULL" in report
    assert "- [ ] Release manager" in report
    assert at_widen.password not in report
    assert applied.current_revisions(at_widen) == (WIDEN,)
    # The rehearsal ran under writers by default, and says what they went through.
    assert "writers before the upgrade:" in report and "writers during the upgrade:" in report
    assert "longest writer wait behind the upgrade:" in report and "(budget 1 s)" in report


def test_release_check_fails_when_the_rehearsal_fails(
    server: ScratchServer,
    behind_db: DatabaseConfig,
    behind_revision: str,
    tmp_path: Path,
    checkout: Path,
) -> None:
    write_revision(
        checkout / "migrations" / "versions",
        "ba0000000001",
        HEAD,
        # behind_db's 'bad' row is in this column at head.
        upgrade=[f"ALTER TABLE sessions ADD CONSTRAINT no_bad CHECK ({FREE_COLUMN.name} <> 'bad')"],
        downgrade=["ALTER TABLE sessions DROP CONSTRAINT no_bad"],
        doc="Forbid bad project names",
    )
    snapshots.write(snapshots.build(server))
    env = {"UAIP_BACKUP_DIR": str(tmp_path), "UAIP_DB_ROOT": str(checkout)}
    result = run_inv("release.check", database=behind_db, env=env)
    assert result.returncode == 1
    assert "6. Rehearsal: FAIL" in result.stdout
    report = next((checkout / "reports").glob("release-*.md")).read_text()
    assert "Overall: **FAIL**" in report
    assert "Revision ba0000000001 (Forbid bad project names) failed" in report
    assert "violated by some row" in report
    assert applied.current_revisions(behind_db) == (behind_revision,)
    # The application would not start on what the failed upgrade left.
    assert "8. Application: FAIL" in result.stdout
    assert (
        "refused the rehearsed copy" in report and "ba0000000001 Forbid bad project names" in report
    )
    # The scratch checkout is no git checkout: the report cannot name the code it releases.
    assert "9. Code under release: FAIL (commit unknown)" in result.stdout
    assert f"{checkout} is not a git checkout, so the code released is not a known commit" in report


def test_release_check_fails_naming_the_statement_writers_wait_behind(
    server: ScratchServer, head_db: DatabaseConfig, tmp_path: Path, checkout: Path
) -> None:
    hold = "LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE"
    write_revision(
        checkout / "migrations" / "versions",
        "ba0000000011",
        HEAD,
        upgrade=[hold, "SELECT pg_sleep(2.5)"],
        downgrade=["SELECT 1"],
        doc="Hold sessions while writers write",
    )
    snapshots.write(snapshots.build(server))
    env = {"UAIP_BACKUP_DIR": str(tmp_path), "UAIP_DB_ROOT": str(checkout)}
    result = run_inv("release.check", database=head_db, env=env)
    assert result.returncode == 1
    assert "6. Rehearsal: FAIL (writers waited" in result.stdout
    assert f"behind `{hold}` in ba0000000011)" in result.stdout
    report_path = next((checkout / "reports").glob("release-*.md"))
    report = report_path.read_text()
    assert f"{hold}: AccessExclusiveLock on sessions, held" in report
    assert "(budget 1 s) behind" in report
    # The JSON twin carries the writers' figures as data, for CI to read.
    twin = json.loads(report_path.with_suffix(".json").read_text())
    rehearsal = next(item for item in twin["items"] if item["key"] == "rehearsal")
    load = rehearsal["data"]["load"]
    assert load["passed"] is False and load["max_writer_wait_seconds"] == 1
    (worst,) = [s for s in load["statements"] if s["longest_writer_wait_seconds"] > 1]
    assert worst["statement"] == hold and worst["locks"] == ["AccessExclusiveLock on sessions"]
    assert load["before"]["transactions"] > 0
    # The writers are the default; --no-load rehearses without them, and the hold is no failure.
    quiet = run_inv("release.check", "--no-load", database=head_db, env=env)
    assert "6. Rehearsal: PASS" in quiet.stdout, quiet.stdout + quiet.stderr
    assert applied.current_revisions(head_db) == (HEAD,)


def test_without_a_backup_there_is_no_rehearsal_and_only_the_downgrade_back(
    behind_db: DatabaseConfig, behind_revision: str, tmp_path: Path, committed: Path
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    result, report, _sql, data = release_check(behind_db, committed, blocked)
    assert result.returncode == 1
    statuses = {item["key"]: item["status"] for item in data["items"]}
    assert statuses["backup"] == statuses["rehearsal"] == statuses["application"] == "FAIL"
    assert statuses["rollback"] == "PASS" and statuses["code"] == "PASS"
    assert "was not run: there was no backup to rehearse on" in section(report, 8)
    rollback = section(report, 7)
    assert "**Only B is possible.**" in rollback
    assert "**A. Restore the backup**: not possible, no backup was taken." in rollback
    assert applied.current_revisions(behind_db) == (behind_revision,)


def test_rehearse_sees_the_locks_of_every_transaction_of_a_revision(
    empty_db: DatabaseConfig, tmp_path: Path
) -> None:
    runner.upgrade(empty_db, BASELINE_REVISION)
    env = {"UAIP_BACKUP_DIR": str(tmp_path)}
    assert run_inv("db.backup", database=empty_db, env=env).returncode == 0
    result = run_inv("db.rehearse", database=empty_db, env=env)
    assert result.returncode == 0, result.stderr
    # 8f2b6c1d4e7a adds a column in a transaction, then builds its index CONCURRENTLY outside it.
    assert f"locks held by {EMAIL}: AccessExclusiveLock on sessions" in result.stdout
    assert (
        "ALTER TABLE sessions ADD COLUMN IF NOT EXISTS email VARCHAR(255): "
        "AccessExclusiveLock on sessions"
    ) in result.stdout


def test_reports_written_in_the_same_second_never_overwrite(tmp_path: Path) -> None:
    from uaip_db.release import write_new

    first = write_new(tmp_path, "release-20261127T120000Z", "one")
    second = write_new(tmp_path, "release-20261127T120000Z", "two")
    assert first != second
    assert (first.read_text(), second.read_text()) == ("one", "two")


# --- the report a manager signs ---------------------------------------------------------------

NOTES_UPGRADE = [
    "CREATE TABLE IF NOT EXISTS release_notes (id integer)",
    "COMMENT ON TABLE release_notes IS 'What each release changed, for people.'",
    "COMMENT ON COLUMN release_notes.id IS 'Identifies the note.'",
]


def add_release_notes(checkout: Path, revision: str, doc: str) -> Path:
    """A revision after head that adds `release_notes` (with comments) and declares that its
    downgrade drops it."""
    return write_revision(
        checkout / "migrations" / "versions",
        revision,
        HEAD,
        upgrade=NOTES_UPGRADE,
        downgrade=["DROP TABLE IF EXISTS release_notes"],
        doc=doc,
        markers='destroys_data_on_downgrade = "release_notes"',
    )


def release_check(
    database: DatabaseConfig, checkout: Path, backups: Path, *, load: bool = False
) -> tuple[subprocess.CompletedProcess[str], str, str, dict[str, Any]]:
    """`inv release.check` as a user runs it: the run, and its report, SQL appendix and JSON.
    Without writers unless `load` (the tests above cover the rehearsal under them), so each
    report test costs a rehearsal, not a workload too."""
    env = {"UAIP_BACKUP_DIR": str(backups), "UAIP_DB_ROOT": str(checkout)}
    flags = [] if load else ["--no-load"]
    result = run_inv("release.check", *flags, database=database, env=env)
    (report,) = (checkout / "reports").glob("release-*.md")
    return (
        result,
        report.read_text(),
        report.with_suffix(".sql").read_text(),
        json.loads(report.with_suffix(".json").read_text()),
    )


@dataclass(frozen=True)
class PassedRelease:
    """One `release.check --no-load` of a clean, committed checkout from `behind_revision`."""

    database: DatabaseConfig
    checkout: Path
    commit: str
    result: subprocess.CompletedProcess[str]
    report: str
    appendix: str
    data: dict[str, Any]


@pytest.fixture(scope="module")
def passed_release(
    server: ScratchServer,
    head_template: str,
    behind_revision: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PassedRelease]:
    """The tests that only read a passing release's run, report, appendix and JSON share one
    (each release check restores and rehearses: seconds)."""
    parent = tmp_path_factory.mktemp("passed_release")
    checkout = copy_of_the_checkout(parent)
    commit = commit_all(checkout)
    database = put_behind(server.create_database(template=head_template), behind_revision)
    try:
        run = release_check(database, checkout, parent / "backups")
        yield PassedRelease(database, checkout, commit, *run)
    finally:
        server.drop_database(database.name)


def section(report: str, number: int) -> str:
    """Item `number`'s section of the report."""
    start = report.index(f"\n## {number}. ")
    return report[start : report.index("\n## ", start + 1)]


def test_the_report_names_the_commit_and_a_clean_tree(passed_release: PassedRelease) -> None:
    commit, result = passed_release.commit, passed_release.result
    report, data = passed_release.report, passed_release.data
    assert result.returncode == 0, result.stderr
    assert f"- **Code**: commit `{commit}` on `main`, clean" in report
    assert f"9. Code under release: PASS (commit {commit[:12]}, clean)" in result.stdout
    assert f"- Commit: `{commit}` (branch `main`)" in section(report, 9)
    assert data["source"]["commit"] == commit and data["source"]["clean"] is True


def test_the_report_records_who_ran_it_where_and_with_which_versions(
    passed_release: PassedRelease,
) -> None:
    from importlib import metadata

    import uaip_db
    from uaip_db.migrations.ledger import who
    from uaip_db.servers.local import find_bindir

    behind_db, result = passed_release.database, passed_release.result
    report, data = passed_release.report, passed_release.data
    assert result.returncode == 0, result.stderr
    ((server_version,),) = sql(behind_db, "SHOW server_version")
    bindir = find_bindir()
    pg_dump = str(bindir / "pg_dump") if bindir else "pg_dump"
    said = subprocess.run([pg_dump, "--version"], capture_output=True, text=True, check=True)
    pg_dump_version = said.stdout.split()[2]  # pg_dump (PostgreSQL) 16.4 (Debian 16.4-1)
    context = report[report.index("## Run context") : report.index("## 1. ")]
    env = child_env(behind_db)["DB_ENV"]
    assert f"- Database: `{behind_db.display_url()}` (DB_ENV={env})" in context
    assert f"- Run by: {who()}, started " in context
    for line in (
        f"- uaip-db: {uaip_db.__version__}",
        f"- Alembic: {metadata.version('alembic')}",
        f"- SQLAlchemy: {metadata.version('sqlalchemy')}",
        f"- psycopg: {metadata.version('psycopg')}",
        f"- PostgreSQL server: {server_version}",
        f"- pg_dump: {pg_dump_version} (",
        "- pg_restore: ",
        "- psql: ",
    ):
        assert line in context, line
    assert f"DB_ENV={env}, PostgreSQL {server_version}" in report
    versions = data["context"]["versions"]
    assert versions["Alembic"] == metadata.version("alembic")
    assert versions["PostgreSQL server"] == server_version
    assert data["context"]["run_by"] == who() and data["env"] == env
    assert behind_db.password not in report + json.dumps(data)


def test_the_json_twin_carries_the_same_items_and_verdicts(
    passed_release: PassedRelease, behind_revision: str
) -> None:
    committed, result = passed_release.checkout, passed_release.result
    report, data = passed_release.report, passed_release.data
    assert result.returncode == 0, result.stderr
    headings = re.findall(r"^## (\d+)\. (.+): (PASS|FAIL)$", report, re.MULTILINE)
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \| (PASS|FAIL) \|", report, re.MULTILINE)
    from_json = [(str(i["number"]), i["title"], i["status"]) for i in data["items"]]
    assert from_json == headings == [(n, t.strip(), s) for n, t, s in rows]
    assert [i["key"] for i in data["items"]] == [
        "revisions",
        "sql",
        "schema_change",
        "lint",
        "backup",
        "rehearsal",
        "rollback",
        "application",
        "code",
        "previous_release",
    ]
    assert data["verdict"] == "PASS" and data["passed"] is True and data["failed"] == []
    assert (data["current"], data["head"]) == (behind_revision, HEAD)
    stem = Path(data["files"]["report"]).stem
    assert data["files"] == {"report": f"{stem}.md", "sql": f"{stem}.sql", "json": f"{stem}.json"}
    assert f"SQL appendix: {committed / 'reports' / stem}.sql" in result.stdout


def test_the_application_item_runs_the_start_up_check_on_the_rehearsed_copy(
    passed_release: PassedRelease, behind_revision: str
) -> None:
    behind_db, result = passed_release.database, passed_release.result
    report = passed_release.report
    assert result.returncode == 0, result.stderr
    assert "8. Application: PASS (start-up check accepts the new schema)" in result.stdout
    application = section(report, 8)
    assert "`uaip_db.check_migrations()`, the check the application runs at start-up" in application
    copy = re.search(r"accepted the rehearsed copy \(database `(uaip_rehearsal_\w+)`", application)
    assert copy is not None
    assert f"/{copy.group(1)} is at head {HEAD}; the migration scripts check out." in application
    assert "(item 8, PASS)" in report[report.index("## Sign-off") :]
    # The source was never upgraded.
    assert applied.current_revisions(behind_db) == (behind_revision,)


def test_an_untracked_revision_file_fails_the_release(
    server: ScratchServer, behind_db: DatabaseConfig, tmp_path: Path, checkout: Path
) -> None:
    """The issue's case: a revision file nobody committed would have shipped unmentioned."""
    commit = commit_all(checkout)
    revision = add_release_notes(checkout, "ba0000000002", "A revision nobody committed")
    snapshots.write(snapshots.build(server))
    git(checkout, "add", "migrations/snapshots")
    git(checkout, "commit", "-q", "-m", "Snapshots only")
    with (checkout / "migrations" / "lint-exceptions.toml").open("a") as exceptions:
        exceptions.write("\n# edited after the commit\n")
    result, report, _sql, data = release_check(behind_db, checkout, tmp_path)
    assert result.returncode == 1
    assert "9. Code under release: FAIL (2 uncommitted file(s))" in result.stdout
    assert "6. Rehearsal: PASS" in result.stdout  # the revision itself is fine
    code = section(report, 9)
    assert f"- Commit: `{git(checkout, 'rev-parse', 'HEAD').strip()}`" in code
    assert commit not in code  # the snapshots commit came after
    assert f"    - `?? migrations/versions/{revision.name}`" in code
    assert "    - ` M migrations/lint-exceptions.toml`" in code
    assert "Revision files git does not track" in code
    assert f"    - `migrations/versions/{revision.name}`" in code
    assert "Overall: **FAIL** (1 of 10 items failed: 9 Code under release)." in report
    assert data["source"]["untracked_revisions"] == [f"migrations/versions/{revision.name}"]
    assert data["verdict"] == "FAIL" and data["failed"] == ["9 Code under release"]


@pytest.fixture
def two_behind(head_db: DatabaseConfig) -> DatabaseConfig:
    """A database at EMAIL: the release widens sessions.user_id, whose downgrade is guarded."""
    runner.downgrade(head_db, EMAIL)
    sql(head_db, "INSERT INTO sessions (user_id, project_name) VALUES ('u1', 'Churn')")
    return head_db


def test_the_rollback_plan_states_each_cost_and_keeps_the_guard(
    two_behind: DatabaseConfig, tmp_path: Path, checkout: Path
) -> None:
    # A release of WIDEN and COMMENTS alone, whatever revisions come after them.
    as_release_1_2(checkout)
    commit_all(checkout)
    result, report, appendix, data = release_check(two_behind, checkout, tmp_path)
    assert result.returncode == 0, result.stderr
    rollback = section(report, 7)
    assert "## 7. Rollback plan: PASS" in rollback
    assert "restoring the backup discards every write made after it was taken " in rollback.replace(
        "**", ""
    )
    assert "in every table (not only the tables this release changes)" in rollback
    assert f"`inv db.downgrade --rev {EMAIL} --yes --confirm-db {two_behind.name}`" in rollback
    assert "Declared by the revisions: no data loss declared" in rollback
    assert (
        "Guard: the downgrade stops at this revision, leaving it applied, when sessions.user_id "
        "has any value "
        "longer than 255 characters"
    ) in rollback
    assert "guard (a DO block that stops here and changes nothing): sessions.user_id" in rollback
    assert "**Preferred: B**" in rollback
    # The summary says it too, before anyone reads item 7.
    summary = report[: report.index("## Run context")]
    assert "restoring the backup discards every write made after it was taken" in summary
    # The appendix: the real downgrade path, the guard before the narrowing ALTER.
    part2 = appendix[appendix.index("-- Part 2: the rollback by downgrade") :]
    guard = part2.index("DO $uaip_guard$")
    assert "RAISE EXCEPTION 'sessions.user_id has % value(s) longer than 255 characters" in part2
    assert guard < part2.index("ALTER TABLE sessions ALTER COLUMN user_id TYPE VARCHAR(255)")
    assert part2.index(f"-- Running downgrade {WIDEN} -> {EMAIL}") < guard
    assert (
        "ALTER TABLE sessions ALTER COLUMN user_id TYPE VARCHAR(500)"
        in appendix[: appendix.index("-- Part 2")]
    )
    assert data["items"][6]["key"] == "rollback" and data["items"][6]["status"] == "PASS"


def test_a_declared_downgrade_loss_makes_the_backup_the_preferred_way_back(
    server: ScratchServer, head_db: DatabaseConfig, tmp_path: Path, checkout: Path
) -> None:
    add_release_notes(checkout, "ba0000000003", "Add release notes")
    snapshots.write(snapshots.build(server))
    commit_all(checkout)
    result, report, _sql, _data = release_check(head_db, checkout, tmp_path)
    assert result.returncode == 0, result.stderr
    rollback = section(report, 7)
    assert "**Preferred: A**" in rollback
    assert "Declared by the revisions: `ba0000000003` drops release_notes" in rollback
    assert "hold): `release_notes`" in rollback  # computed from the schemas too


def test_the_summary_fits_on_one_screen_and_the_sql_goes_to_the_appendix(
    at_widen: DatabaseConfig, tmp_path: Path, checkout: Path
) -> None:
    # Release 1.2.0: one revision, COMMENTS, with its many COMMENT ON statements.
    commit_all(checkout)
    result, report, appendix, data = release_check(at_widen, checkout, tmp_path, load=True)
    assert result.returncode == 0, result.stderr
    screen = "\n".join(report.splitlines()[:40])
    assert "Overall: **PASS** (all 10 items passed)." in screen
    pending = 1
    assert f"- **What**: {pending} revision(s), `{WIDEN}` -> `{COMMENTS}` (head)" in screen
    assert f"- **Where**: `{at_widen.display_url()}`, DB_ENV=" in screen
    assert "- **Code**: commit `" in screen
    for item in data["items"]:
        assert f"| {item['number']} | {item['title']} | {item['status']} |" in screen
    assert "**Still for a person to decide:**" in screen
    assert "Which way back" in screen and "Whether the application works" in screen
    assert f"Full SQL: `{data['files']['sql']}`" in screen
    # The report was 475 lines, mostly COMMENT ON; they live in the appendix now. The
    # report names only the few statements its lock lists show (a bound that does not grow with
    # the statements); the appendix holds every one, twice (upgrade and downgrade).
    upgrade_part = appendix.split("Part 2")[0]
    comments = upgrade_part.count("COMMENT ON")
    # Per revision: its lock lines and its two digest lines (upgrade, rollback); the first
    # screen's lock list.
    shown = (STATEMENTS_SHOWN + 2) * pending + LOCKS_SHOWN
    assert comments > shown and report.count("COMMENT ON") <= shown
    counted = re.findall(
        r"(\d+) `COMMENT ON` statements \(documentation only\)", section(report, 2)
    )
    assert sum(int(n) for n in counted) == comments
    assert len(report.splitlines()) < 250


def test_release_backups_are_pruned_to_the_newest_of_that_database_and_the_report_says_so(
    behind_db: DatabaseConfig, tmp_path: Path, committed: Path, server: ScratchServer
) -> None:
    """Issue 25: every release.check kept its backup forever. The release ones of this database
    (same server) are pruned to UAIP_RELEASE_BACKUPS_KEPT; never the new one, nobody else's."""
    releases = tmp_path / "release"
    older = run_inv("db.backup", "--out", str(releases), "--no-verify", database=behind_db)
    other_db = server.create_database()
    try:
        other = run_inv("db.backup", "--out", str(releases), "--no-verify", database=other_db)
    finally:
        server.drop_database(other_db.name)
    mine = run_inv("db.backup", "--out", str(tmp_path), "--no-verify", database=behind_db)
    assert older.returncode == other.returncode == mine.returncode == 0, older.stderr + other.stderr
    before = {path.name for path in releases.iterdir() if not path.name.startswith(".")}
    assert len(before) == 2
    env = {
        "UAIP_BACKUP_DIR": str(tmp_path),
        "UAIP_DB_ROOT": str(committed),
        "UAIP_RELEASE_BACKUPS_KEPT": "1",
    }
    result = run_inv("release.check", "--no-load", database=behind_db, env=env)
    assert result.returncode == 0, result.stderr
    (report,) = (committed / "reports").glob("release-*.md")
    text = report.read_text()
    after = {path.name for path in releases.iterdir() if not path.name.startswith(".")}
    removed = before - after
    assert len(removed) == 1 and len(after) == 2  # the older one went; the new one and the other
    assert "the newest 1 release backup(s) of this database on this server are kept" in text
    assert f"- Removed: `{removed.pop()}`" in text
    # The backup people took by hand, beside the release folder, is not a release backup.
    assert len(list(tmp_path.glob(f"{behind_db.name}-*"))) == 1
    bad = run_inv(
        "release.check", database=behind_db, env={**env, "UAIP_RELEASE_BACKUPS_KEPT": "0"}
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "UAIP_RELEASE_BACKUPS_KEPT='0' is not a whole number of 1 or more" in bad.stderr
