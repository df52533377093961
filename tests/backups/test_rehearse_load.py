"""db.rehearse --load: an upgrade under real pgbench writers, measured statement by statement
against the writer-wait budget (real PostgreSQL, real concurrent writers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import CHAIN, HEAD, run_inv, sql, write_revision
from uaip_db.backups import load, workload
from uaip_db.backups.dump import create_backup
from uaip_db.backups.rehearse import rehearse
from uaip_db.backups.workload import LoadSettings, Workload
from uaip_db.errors import BackupError, SettingsError
from uaip_db.migrations import applied, runner, snapshots
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig

BLOCKING, AFTER = "ba0000000010", "ba0000000012"
LOCK_SESSIONS = "LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE"
# Short before-window and a light rate: the machine is shared; the budget semantics need neither.
QUICK = LoadSettings(clients=3, rate=60, before_seconds=1.0)


def plant(
    server: ScratchServer, checkout: Path, upgrade: list[str], doc: str, then: tuple[str, ...] = ()
) -> None:
    """A revision after head in the scratch checkout (and, with `then`, one more after it),
    with their snapshots built for verify."""
    versions = checkout / "migrations" / "versions"
    write_revision(versions, BLOCKING, HEAD, upgrade, ["SELECT 1"], doc=doc)
    if then:
        write_revision(versions, AFTER, BLOCKING, list(then), ["SELECT 1"], doc="Then wait")
    snapshots.write(snapshots.build(server))


def test_a_statement_holding_a_table_lock_breaks_the_budget_and_is_named(
    server: ScratchServer, head_db: DatabaseConfig, tmp_path: Path, checkout: Path
) -> None:
    plant(server, checkout, [LOCK_SESSIONS, "SELECT pg_sleep(2.5)"], "Hold sessions")
    made = create_backup(head_db, tmp_path)
    result = rehearse(made.path, server, load=QUICK)
    assert result.load is not None
    over = result.load.over_budget()
    assert [(s.revision, s.statement) for s in over] == [(BLOCKING, LOCK_SESSIONS)], "\n".join(
        result.summary()
    )
    assert over[0].locks == ("AccessExclusiveLock on sessions",)
    # The lock was held through the sleep, and writers waited behind it past the 1 s budget.
    assert over[0].held_seconds is not None and over[0].held_seconds > 1.0
    seen = "\n".join(result.summary())
    assert over[0].longest_wait > QUICK.max_writer_wait and over[0].writers_waited > 0, seen
    assert result.load.longest_wait == over[0].longest_wait
    assert len(result.problems) == 1 and LOCK_SESSIONS in result.problems[0]
    assert "budget 1 s" in result.problems[0]
    assert result.load.error_count() == 0
    summary = "\n".join(result.summary())
    assert f"{LOCK_SESSIONS}: AccessExclusiveLock on sessions, held" in summary
    assert result.load.to_json()["passed"] is False
    assert applied.current_revisions(head_db) == (HEAD,)


def test_a_short_stall_is_seen_and_charged_but_within_the_budget(
    server: ScratchServer, head_db: DatabaseConfig, tmp_path: Path, checkout: Path
) -> None:
    hold = "LOCK TABLE conversation_history IN SHARE MODE"  # writes wait, reads go on
    plant(server, checkout, [hold, "SELECT pg_sleep(0.4)"], "Hold conversation_history briefly")
    made = create_backup(head_db, tmp_path)
    result = rehearse(made.path, server, load=QUICK)
    assert result.passed, result.problems
    assert result.load is not None
    held = [s for s in result.load.statements if s.statement == hold]
    assert len(held) == 1 and held[0].locks == ("ShareLock on conversation_history",)
    # Sampled every 20 ms, a stall a fraction of the budget long is seen and charged to it.
    seen = "\n".join(result.summary())
    assert held[0].writers_waited > 0, seen
    assert 0 < held[0].longest_wait < QUICK.max_writer_wait, seen
    assert result.load.longest_wait == held[0].longest_wait


def test_the_projects_own_revisions_pass_the_gate_with_latencies(
    server: ScratchServer, behind_db: DatabaseConfig, behind_revision: str, tmp_path: Path
) -> None:
    made = create_backup(behind_db, tmp_path)
    result = rehearse(made.path, server, load=QUICK)
    assert result.passed, result.problems
    measured = result.load
    assert measured is not None and measured.passed
    assert measured.error_count() == 0
    assert measured.before.transactions > 0 and measured.before.p50_ms is not None
    assert measured.before.p99_ms is not None and measured.before.p99_ms >= measured.before.p50_ms
    assert measured.during.transactions > 0 and measured.during.p99_ms is not None
    # What took table locks is among the revisions after the one the database was at.
    recorded = {s.revision for s in measured.statements}
    assert recorded <= set(CHAIN[CHAIN.index(behind_revision) + 1 :])
    assert all(s.held_seconds is not None for s in measured.statements)
    assert measured.samples > 0
    assert "writers during the upgrade:" in "\n".join(result.summary())
    assert applied.current_revisions(behind_db) == (behind_revision,)


def test_writer_errors_are_counted_and_fail_the_rehearsal(
    server: ScratchServer, head_db: DatabaseConfig, tmp_path: Path, checkout: Path
) -> None:
    # The new schema refuses what the application writes: every conversation writer fails.
    refuse = (
        "ALTER TABLE conversation_history ADD CONSTRAINT no_rehearsal_messages "
        "CHECK (role <> 'user') NOT VALID"
    )
    # Committed by its own revision; the next one gives the writers time to hit it, holding
    # no lock they want.
    plant(server, checkout, [refuse], "Refuse user messages", then=("SELECT pg_sleep(1)",))
    made = create_backup(head_db, tmp_path)
    result = rehearse(made.path, server, load=QUICK)
    assert result.load is not None
    assert result.load.error_count() > 0
    assert any("no_rehearsal_messages" in error for error in result.load.errors)
    assert [p for p in result.problems if "writer error(s) during the upgrade" in p]
    assert len(result.problems) == 1


def test_writers_that_fail_before_the_upgrade_stop_the_rehearsal_saying_so(
    server: ScratchServer, head_db: DatabaseConfig, tmp_path: Path, checkout: Path
) -> None:
    refuse = "ALTER TABLE stage_data ADD CONSTRAINT no_load_fields CHECK (field_name <> 'load')"
    plant(server, checkout, [refuse], "Refuse the load's fields")
    runner.upgrade(head_db, "head")  # the backup already refuses what the writers write
    made = create_backup(head_db, tmp_path)
    with pytest.raises(BackupError, match=r"stopped before the upgrade began.*no_load_fields"):
        rehearse(made.path, server, load=QUICK)


def test_pgbench_gets_the_password_only_through_a_clean_environment(
    head_db: DatabaseConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A caller's libpq variable that would send pgbench elsewhere must not reach it.
    monkeypatch.setenv("PGHOSTADDR", "192.0.2.1")
    monkeypatch.setenv("PGSERVICE", "nowhere")
    assert head_db.password
    writers = Workload(head_db, tmp_path, LoadSettings(clients=2, rate=50))
    writers.start()
    try:
        pid = writers.pid
        assert pid is not None
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    finally:
        ran = writers.stop()
    assert head_db.password not in argv
    assert f"PGPASSWORD={head_db.password}" in environ
    assert not any(item.startswith(("PGHOSTADDR=", "PGSERVICE=")) for item in environ)
    assert ran.errors == 0 and ran.transactions
    assert {t.table for t in ran.transactions} <= {
        path.stem for path in workload.application_scripts()
    }
    monkeypatch.delenv("PGHOSTADDR")  # the test's own helper is a plain libpq client
    monkeypatch.delenv("PGSERVICE")
    written = sql(head_db, "SELECT count(*) FROM conversation_history")[0][0]
    assert written == sum(1 for t in ran.transactions if t.table == "conversation_history")


def test_inv_rehearse_load_fails_naming_the_statement_and_takes_a_wider_budget(
    server: ScratchServer, head_db: DatabaseConfig, tmp_path: Path, checkout: Path
) -> None:
    plant(server, checkout, [LOCK_SESSIONS, "SELECT pg_sleep(2.5)"], "Hold sessions")
    env = {"UAIP_BACKUP_DIR": str(tmp_path), "UAIP_DB_ROOT": str(checkout)}
    assert run_inv("db.backup", database=head_db, env=env).returncode == 0
    failed = run_inv("db.rehearse", "--load", database=head_db, env=env)
    assert failed.returncode == 1, failed.stderr
    assert f"behind `{LOCK_SESSIONS}` in {BLOCKING}" in failed.stderr
    assert "writers before the upgrade:" in failed.stdout and "p99" in failed.stdout
    assert head_db.password not in failed.stdout + failed.stderr
    # A budget the 2.5 s hold fits in (set in the environment, documented) lets it pass.
    wide = run_inv(
        "db.rehearse",
        "--load",
        "--json",
        database=head_db,
        env={**env, "UAIP_MAX_WRITER_WAIT": "30"},
    )
    assert wide.returncode == 0, wide.stderr
    data = json.loads(wide.stdout)
    assert data["passed"] and data["load"]["max_writer_wait_seconds"] == 30
    assert any(s["statement"] == LOCK_SESSIONS for s in data["load"]["statements"])


def test_bad_budgets_are_usage_errors(head_db: DatabaseConfig) -> None:
    without_load = run_inv("db.rehearse", "--max-writer-wait", "2", database=head_db)
    assert without_load.returncode == 2 and "needs --load" in without_load.stderr
    bad = run_inv("db.rehearse", "--load", "--max-writer-wait", "0", database=head_db)
    assert bad.returncode == 2 and "--max-writer-wait" in bad.stderr
    setting = run_inv(
        "db.rehearse", "--load", database=head_db, env={"UAIP_MAX_WRITER_WAIT": "soon"}
    )
    assert setting.returncode == 2 and "UAIP_MAX_WRITER_WAIT='soon'" in setting.stderr


def test_the_budget_setting_is_checked_where_it_is_read() -> None:
    assert load.max_writer_wait({}) == 1.0
    assert load.max_writer_wait({"UAIP_MAX_WRITER_WAIT": "0.25"}) == 0.25
    for bad in ("soon", "-1", "inf"):
        with pytest.raises(SettingsError, match="UAIP_MAX_WRITER_WAIT"):
            load.max_writer_wait({"UAIP_MAX_WRITER_WAIT": bad})


def test_a_pgbench_log_line_becomes_a_transaction() -> None:
    names = ["a_table", "stage_data", "z_table"]
    done = workload.parse_log_line("2 17 3861 1 1795792622 30272 3333", names)
    assert done == [workload.Transaction("stage_data", 1795792622.030272, 0.003861)]
    assert workload.parse_log_line("0 3 failed 2 1795792622 1 0", names)[0].seconds is None
    assert workload.parse_log_line("0 3 skipped 2 1795792622 1 0", names) == []


def test_a_contract_step_the_application_still_uses_fails_naming_its_statement(
    server: ScratchServer, head_db: DatabaseConfig, tmp_path: Path, checkout: Path
) -> None:
    """The workload is the application's (workload/); dropping what it writes is named plainly."""
    versions = checkout / "migrations" / "versions"
    write_revision(
        versions,
        "a110000000e1",
        HEAD,
        [
            "CREATE TABLE zz_notes (id serial PRIMARY KEY, author text, body text)",
            "COMMENT ON TABLE zz_notes IS 'notes'",
        ],
        ["DROP TABLE zz_notes"],
        doc="Notes",
    )
    write_revision(
        versions,
        "a110000000c1",
        "a110000000e1",
        ["ALTER TABLE zz_notes DROP COLUMN author", "SELECT pg_sleep(1)"],
        ["ALTER TABLE zz_notes ADD COLUMN author text"],
        doc="Drop the author",
        markers='destroys_data = "authors are in body since the release before"\n',
    )
    snapshots.write(snapshots.build(server))
    runner.upgrade(head_db, "a110000000e1")
    (checkout / "workload" / "zz_notes.sql").write_text(
        "INSERT INTO zz_notes (author, body) VALUES ('writer ' || :client_id, 'a note');\n"
    )
    made = create_backup(head_db, tmp_path)
    result = rehearse(made.path, server, load=QUICK)
    assert result.load is not None and not result.passed
    assert any(
        "the application's statement in workload/zz_notes.sql failed" in error
        and '"author"' in error
        and "deploy the application that stops using it before this revision" in error
        for error in result.load.errors
    ), result.load.errors
