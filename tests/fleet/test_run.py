"""Fleet runs on real PostgreSQL: failures stay local, re-runs touch nothing, canaries, shards,
drift, and no password anywhere."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.conftest import CHAIN, HEAD, run_inv, sql
from tests.fleet.conftest import FleetFixture
from uaip_db.fleet import run
from uaip_db.fleet.report import AT_HEAD, FAILED, SKIPPED, UPGRADED, VERIFIED, TargetResult
from uaip_db.migrations.lock import LOCK_KEY
from uaip_db.servers.scratch import free_port
from uaip_db.settings import DatabaseConfig

MakeFleet = Callable[..., FleetFixture]


def revision_of(database: DatabaseConfig) -> str | None:
    exists = sql(database, "SELECT to_regclass('alembic_version') IS NOT NULL")[0][0]
    if not exists:
        return None
    rows = sql(database, "SELECT version_num FROM alembic_version")
    return rows[0][0] if rows else None


def block_first_revision(database: DatabaseConfig) -> None:
    """The first revision creates `sessions`: a table already there makes it fail."""
    sql(database, "CREATE TABLE sessions (id int)")


def test_one_target_that_cannot_be_upgraded(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(4)
    names = list(fleet.databases)
    broken = names[2]
    block_first_revision(fleet.databases[broken])
    result = run_inv(
        "fleet.upgrade", "--targets", str(fleet.path), "--parallel", "2", env=fleet.env
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"1 target(s) failed: {broken}." in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for name, database in fleet.databases.items():
        assert revision_of(database) == (None if name == broken else HEAD), name
        assert f"] {name}" in result.stdout  # its live progress line
    # The table names the failure and why, in one line.
    failed_line = next(line for line in result.stdout.splitlines() if line.startswith(broken))
    assert "failed" in failed_line and "already exists" in failed_line
    assert "at base" in failed_line  # where it stays, read after the failure


def test_a_refused_password_names_the_target_not_the_single_database_settings(
    make_fleet: MakeFleet,
) -> None:
    fleet = make_fleet(2)
    env = {**fleet.env, "FLEET_TEST_PASSWORD": "not-the-password"}
    result = run_inv("fleet.upgrade", "--targets", str(fleet.path), env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    said = result.stdout + result.stderr
    assert "target 'tenant-00' (line" in said and "the password was refused" in said
    assert "FATAL" not in said
    assert "DB_PASSWORD" not in said and "not-the-password" not in said
    # Its revision could not be read: the table does not claim it is at base.
    failed_line = next(line for line in result.stdout.splitlines() if line.startswith("tenant-00"))
    assert "at base" not in failed_line


def test_a_rerun_touches_nothing_at_head(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(3)
    first = run.upgrade(run.load_fleet(fleet.path), parallel=2)
    assert [r.status for r in first.targets] == [UPGRADED] * 3
    assert all(r.from_revision is None and r.to_revision == HEAD for r in first.targets)
    ledger = {
        name: sql(db, "SELECT revision, applied_at FROM uaip_db_migration_ledger ORDER BY 1")
        for name, db in fleet.databases.items()
    }
    assert all(len(rows) == len(CHAIN) for rows in ledger.values())
    # Hold every target's migration lock: a re-run that wanted it would time out.
    holders = []
    for database in fleet.databases.values():
        holder = psycopg.connect(**database.connect_kwargs(), autocommit=True)
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        holders.append(holder)
    try:
        again = run.upgrade(run.load_fleet(fleet.path), parallel=2, lock_wait=0)
    finally:
        for holder in holders:
            holder.close()
    assert [r.status for r in again.targets] == [AT_HEAD] * 3, again.summary()
    assert all(r.from_revision == HEAD == r.to_revision for r in again.targets)
    assert again.exit_code == 0
    for name, database in fleet.databases.items():
        assert (
            sql(database, "SELECT revision, applied_at FROM uaip_db_migration_ledger ORDER BY 1")
            == ledger[name]
        )


def test_a_failing_canary_stops_the_wave(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(4)
    first = next(iter(fleet.databases))
    block_first_revision(fleet.databases[first])
    result = run_inv(
        "fleet.upgrade",
        "--targets",
        str(fleet.path),
        "--canary",
        "1",
        "--json",
        env=fleet.env,
    )
    assert result.returncode == 1
    report = json.loads(result.stdout)
    statuses = {item["name"]: item["status"] for item in report["targets"]}
    assert statuses == {name: FAILED if name == first else SKIPPED for name in fleet.databases}
    assert report["summary"]["failed"] == [first] and report["summary"]["skipped"] == 3
    for database in fleet.databases.values():
        assert revision_of(database) is None
    # Once the canary is fixed, the wave goes through.
    sql(fleet.databases[first], "DROP TABLE sessions")
    fixed = run_inv("fleet.upgrade", "--targets", str(fleet.path), "--canary", "1", env=fleet.env)
    assert fixed.returncode == 0, fixed.stderr
    assert all(revision_of(database) == HEAD for database in fleet.databases.values())


def test_after_the_canaries_a_failure_does_not_stop_the_others(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(4)
    last = list(fleet.databases)[-1]
    block_first_revision(fleet.databases[last])
    report = run.upgrade(run.load_fleet(fleet.path), canary=2, parallel=2)
    assert [r.status for r in report.targets] == [UPGRADED] * 3 + [FAILED]
    assert report.failed() == [last] and report.exit_code == 1


def test_two_shards_cover_the_fleet_and_merge(make_fleet: MakeFleet, tmp_path: Path) -> None:
    fleet = make_fleet(6)
    reports = tmp_path / "reports"
    reports.mkdir()
    seen: list[str] = []
    for shard in ("0/2", "1/2"):
        result = run_inv(
            "fleet.upgrade",
            "--targets",
            str(fleet.path),
            "--shard",
            shard,
            "--json",
            env=fleet.env,
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["summary"]["shards"] == [shard]
        seen += [item["name"] for item in report["targets"]]
        (reports / f"shard-{shard[0]}.json").write_text(result.stdout)
    assert sorted(seen) == sorted(fleet.databases) and len(seen) == len(set(seen))
    # reports/ also holds release reports' JSON twins: a folder merges its fleet reports only.
    (reports / "release-20261127T120000Z.json").write_text('{"items": []}')
    for database in fleet.databases.values():
        assert revision_of(database) == HEAD
        # Each target was upgraded once: one ledger row per revision.
        assert sql(database, "SELECT count(*) FROM uaip_db_migration_ledger") == [(len(CHAIN),)]
    merged = run_inv("fleet.report", str(reports), "--json")
    assert merged.returncode == 0, merged.stderr
    summary = json.loads(merged.stdout)["summary"]
    assert (
        summary["total"] == 6 and summary["upgraded"] == 6 and summary["shards"] == ["0/2", "1/2"]
    )
    # The same shard twice overlaps: refused.
    twice = run_inv("fleet.report", f"{reports}/shard-0.json,{reports}/shard-0.json")
    assert twice.returncode == 2 and "shards overlap" in twice.stderr


def test_verify_names_exactly_the_drifted_target(make_fleet: MakeFleet, head_template: str) -> None:
    fleet = make_fleet(3, template=head_template)
    drifted = list(fleet.databases)[1]
    sql(fleet.databases[drifted], "ALTER TABLE sessions ADD COLUMN surprise integer")
    result = run_inv("fleet.verify", "--targets", str(fleet.path), env=fleet.env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"1 target(s) differ from their revision's schema or failed: {drifted}." in result.stderr
    assert "surprise" in result.stdout
    for name in fleet.databases:
        line = next(line for line in result.stdout.splitlines() if line.startswith(name + " "))
        assert ("drifted" if name == drifted else "verified") in line


def test_check_exits_3_with_pending_and_status_says_where(
    make_fleet: MakeFleet, head_template: str
) -> None:
    fleet = make_fleet(2, template=head_template)
    behind = next(iter(fleet.databases))
    sql(fleet.databases[behind], "DROP TABLE alembic_version, uaip_db_migration_ledger CASCADE")
    sql(fleet.databases[behind], "DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    check = run_inv("fleet.check", "--targets", str(fleet.path), env=fleet.env)
    assert check.returncode == 3, check.stdout + check.stderr
    assert f"have pending revisions: {behind}." in check.stderr
    status = run_inv("fleet.status", "--targets", str(fleet.path), "--json", env=fleet.env)
    assert status.returncode == 0, status.stderr
    found = {item["name"]: item for item in json.loads(status.stdout)["targets"]}
    assert found[behind]["status"] == "pending" and found[behind]["from"] is None
    assert len(found[behind]["details"]) == len(CHAIN)
    assert [item["status"] for name, item in found.items() if name != behind] == [AT_HEAD]


WRONG_PASSWORD_VARIABLE = "FLEET_TEST_WRONG_PASSWORD"
WRONG_PASSWORD = "not-the-password"


def add_unreachable_targets(fleet: FleetFixture, dbname: str) -> dict[str, str]:
    """Two targets that cannot be read: one whose password is refused, one on a port where
    nothing listens. Returns each one's name and the reason its line gives."""
    with fleet.path.open("a", encoding="utf-8") as file:
        file.write(
            "\n".join(
                [
                    "[[targets]]",
                    'name = "refused"',
                    f'dbname = "{dbname}"',
                    f'password_env = "{WRONG_PASSWORD_VARIABLE}"',
                    "",
                    "[[targets]]",
                    'name = "nowhere"',
                    f'dbname = "{dbname}"',
                    f"port = {free_port()}",
                    "",
                ]
            )
        )
    return {"refused": "the password was refused", "nowhere": "no PostgreSQL server answers"}


@pytest.mark.parametrize(
    ("command", "reachable_status"), [("status", AT_HEAD), ("check", AT_HEAD), ("verify", VERIFIED)]
)
def test_a_target_that_cannot_be_read_is_not_reported_at_base(
    make_fleet: MakeFleet, head_template: str, command: str, reachable_status: str
) -> None:
    fleet = make_fleet(1, template=head_template)
    ((reachable, database),) = fleet.databases.items()
    unreachable = add_unreachable_targets(fleet, database.name)
    env = {**fleet.env, WRONG_PASSWORD_VARIABLE: WRONG_PASSWORD}
    arguments = (f"fleet.{command}", "--targets", str(fleet.path))
    text = run_inv(*arguments, env=env)
    as_json = run_inv(*arguments, "--json", env=env)
    assert text.returncode == 1, text.stdout + text.stderr
    assert as_json.returncode == 1, as_json.stdout + as_json.stderr
    found = {item["name"]: item for item in json.loads(as_json.stdout)["targets"]}
    assert found[reachable]["status"] == reachable_status and found[reachable]["from"] == HEAD
    assert found[reachable]["revision_known"] is True
    table = text.stdout.splitlines()
    for name, reason in unreachable.items():
        item = found[name]
        assert (item["status"], item["from"], item["to"]) == (FAILED, None, None), item
        assert item["revision_known"] is False, item
        line = next(line for line in table if line.startswith(name + " "))
        assert "at base" not in line, line
        for said in (line, item["error"]):
            assert f"target '{name}' (line" in said and reason in said, said
            assert "FATAL" not in said and "connection failed" not in said, said
    assert WRONG_PASSWORD not in text.stdout + text.stderr + as_json.stdout + as_json.stderr


def test_no_password_in_output_reports_or_process_arguments(
    make_fleet: MakeFleet, tmp_path: Path
) -> None:
    fleet = make_fleet(3)
    block_first_revision(fleet.databases[next(iter(fleet.databases))])
    seen_arguments: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    seen_arguments.append(cmdline.read_bytes().decode(errors="replace"))
                except OSError:
                    continue
            stop.wait(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        # --backup: pg_dump and pg_restore run too, and a throwaway server proves each backup.
        report = run.upgrade(
            run.load_fleet(fleet.path), parallel=2, backup=True, backup_dir=tmp_path / "b"
        )
        result = run_inv("fleet.status", "--targets", str(fleet.path), "--json", env=fleet.env)
    finally:
        stop.set()
        watcher.join()
    assert [r.status for r in report.targets] == [FAILED, UPGRADED, UPGRADED]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(fleet.databases)
    assert seen_arguments
    assert not [text for text in seen_arguments if fleet.password in text]
    for text in (report.to_json(), report.summary(), result.stdout, result.stderr):
        assert fleet.password not in text
    assert fleet.password not in fleet.path.read_text()


def test_production_backs_up_each_target_and_a_failed_backup_fails_that_target_only(
    make_fleet: MakeFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = make_fleet(3)
    monkeypatch.setenv("DB_ENV", "production")
    names = list(fleet.databases)
    folder = tmp_path / "backups"
    folder.mkdir()
    (folder / names[1]).write_text("a file where the target's backup folder should be")
    report = run.upgrade(run.load_fleet(fleet.path), parallel=2, backup_dir=folder)
    assert [r.status for r in report.targets] == [UPGRADED, FAILED, UPGRADED]
    assert "backup before the upgrade failed, so nothing was changed" in (
        report.targets[1].error or ""
    )
    assert revision_of(fleet.databases[names[1]]) is None
    for name in (names[0], names[2]):
        (backup,) = (folder / name).glob("uaip_fleet_*")
        manifest = json.loads((backup / "manifest.json").read_text())
        assert manifest["database"] == fleet.databases[name].name
        assert manifest["state"] == "verified" and not manifest["revisions"]


def exits_abruptly(job: run.ReadJob) -> TargetResult:
    """A worker that dies the way an out-of-memory kill ends it: no exception, no result."""
    os._exit(9)


def test_a_worker_that_dies_fails_its_target_in_one_line_not_the_run(
    make_fleet: MakeFleet,
) -> None:
    fleet = run.load_fleet(make_fleet(2).path)
    jobs = [run.ReadJob(t.name, c) for t, c in zip(fleet.targets, fleet.configs, strict=True)]
    found = run.run_jobs(exits_abruptly, jobs, 2, processes=True, on_result=None)
    assert sorted(r.name for r in found) == sorted(t.name for t in fleet.targets)
    assert all(r.status == FAILED and "worker process died" in (r.error or "") for r in found)
    assert not any(r.revision_known for r in found)


def dies_on_the_first_target(job: run.ReadJob) -> TargetResult:
    """The first target's worker is killed mid-run; the others finish normally."""
    if job.name == "tenant-00":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.2)
    return TargetResult(job.name, AT_HEAD)


def test_a_worker_killed_mid_run_fails_only_its_target_and_the_rest_finish(
    make_fleet: MakeFleet,
) -> None:
    fleet = run.load_fleet(make_fleet(5).path)
    jobs = [run.ReadJob(t.name, c) for t, c in zip(fleet.targets, fleet.configs, strict=True)]
    seen: list[str] = []
    found = run.run_jobs(
        dies_on_the_first_target,
        jobs,
        2,
        processes=True,
        on_result=lambda result: seen.append(result.name),
    )
    by_name = {result.name: result for result in found}
    assert sorted(by_name) == sorted(seen) == sorted(t.name for t in fleet.targets)
    died = [result for result in found if result.status == FAILED]
    assert [result.name for result in died] == [jobs[0].name]
    assert "worker process died" in (died[0].error or "")
    assert all(by_name[job.name].status == AT_HEAD for job in jobs[1:])


def test_check_behind_a_table_lock_fails_that_target_naming_the_holder(
    make_fleet: MakeFleet, head_template: str
) -> None:
    fleet = make_fleet(2, template=head_template)
    busy, database = next(iter(fleet.databases.items()))
    kwargs = {**database.connect_kwargs(), "application_name": "the-holder"}
    with psycopg.connect(**kwargs) as holder:
        holder.execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        pid = holder.info.backend_pid
        check = run_inv(
            "fleet.check",
            "--targets",
            str(fleet.path),
            env={**fleet.env, "UAIP_READ_LOCK_WAIT": "1s"},
            timeout=30,  # "no end"
        )
        holder.rollback()
    assert check.returncode != 0, check.stdout + check.stderr
    line = next(line for line in check.stdout.splitlines() if line.startswith(busy + " "))
    assert f"pid {pid} (the-holder from " in line, check.stdout
    assert "holds AccessExclusiveLock on public.sessions" in line


def test_an_interrupted_concurrent_index_is_finished_by_the_next_run(
    make_fleet: MakeFleet,
) -> None:
    """Issue 26: fleet.upgrade refused a target whose CREATE INDEX CONCURRENTLY had been cut off
    (an INVALID index, the version row still before it), which the upgrade itself finishes; it
    now takes db.upgrade's path, and refuses only an INVALID index the upgrade leaves."""
    from uaip_db.migrations import runner

    fleet = make_fleet(2)
    interrupted, half_built = fleet.databases.values()
    for database in (interrupted, half_built):
        runner.upgrade(database, CHAIN[0])
    sql(interrupted, "ALTER TABLE sessions ADD COLUMN email VARCHAR(255)")
    sql(interrupted, "CREATE INDEX idx_sessions_email ON sessions (email)")
    sql(
        interrupted,
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'idx_sessions_email'::regclass",
    )
    sql(half_built, "CREATE TABLE hand_made (id int); INSERT INTO hand_made VALUES (1), (1)")
    with (
        psycopg.connect(**half_built.connect_kwargs(), autocommit=True) as conn,
        pytest.raises(psycopg.errors.UniqueViolation),
    ):  # an INVALID index no revision touches
        conn.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_half_built ON hand_made (id)")
    report = run.upgrade(run.load_fleet(fleet.path), parallel=1)
    finished, refused = report.targets
    assert finished.status == UPGRADED, finished.error
    assert sql(interrupted, "SELECT count(*) FROM pg_index WHERE NOT indisvalid") == [(0,)]
    assert refused.status == FAILED and refused.to_revision == HEAD
    assert "Index idx_half_built is INVALID" in (refused.error or "")
