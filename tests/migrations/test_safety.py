"""Safe under concurrency, faults and bad input."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.conftest import (
    BASELINE,
    BIN,
    CHAIN,
    EMAIL,
    HEAD,
    ROOT,
    WIDEN,
    cli_env,
    run_cli,
    run_inv,
    sql,
    write_revision,
)
from uaip_db.catalog import expected
from uaip_db.catalog.snapshot import diff, take
from uaip_db.migrations import applied, history, runner
from uaip_db.settings import DatabaseConfig

WAITING_FOR_SESSIONS = (
    "SELECT 1 FROM pg_locks WHERE NOT granted AND relation = 'sessions'::regclass"
)
MIGRATION_CONNECTION = (
    "SELECT 1 FROM pg_stat_activity "
    "WHERE datname = current_database() AND application_name = 'uaip-db migration'"
)


def until(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def upgrades_at_once(
    count: int, database: DatabaseConfig, **extra: str
) -> tuple[list[subprocess.Popen[str]], list[tuple[str, str]]]:
    """`count` runs of `inv db.upgrade` started together; each one's (stdout, stderr)."""
    env = cli_env(database, **extra)
    procs = [
        subprocess.Popen(
            [str(BIN / "inv"), "db.upgrade"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    return procs, [proc.communicate(timeout=120) for proc in procs]


def test_eight_runners_at_once_apply_each_revision_once(empty_db: DatabaseConfig) -> None:
    procs, outputs = upgrades_at_once(8, empty_db)
    assert [proc.returncode for proc in procs] == [0] * 8, [err for _, err in outputs]
    applied = [
        line.split()[1]
        for out, _ in outputs
        for line in out.splitlines()
        if line.strip().startswith("applied ")
    ]
    assert sorted(applied) == sorted(s.revision for s in history.load().order)
    assert sql(empty_db, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    assert diff(expected.snapshot(HEAD), take(empty_db)) == []


def test_a_revision_failing_halfway_leaves_the_previous_schema(
    empty_db: DatabaseConfig, checkout: Path
) -> None:
    write_revision(
        checkout / "migrations" / "versions",
        "ba11ed000001",
        HEAD,
        upgrade=[
            "CREATE TABLE half_done (id integer)",
            "ALTER TABLE sessions ADD COLUMN half text",
            "SELECT 1 / 0",
        ],
        downgrade=["DROP TABLE half_done"],
        doc="Fails halfway",
    )
    result = run_inv("db.upgrade", database=empty_db, env={"UAIP_DB_ROOT": str(checkout)})
    assert result.returncode == 1
    assert "Revision ba11ed000001 (Fails halfway) failed in `SELECT 1 / 0`" in result.stderr
    assert "division by zero" in result.stderr
    assert f"stays at revision {HEAD}" in result.stderr
    assert "Traceback" not in result.stderr
    assert applied.current_revisions(empty_db) == (HEAD,)
    assert diff(expected.snapshot(HEAD), take(empty_db)) == []


def test_sigkill_at_any_moment_then_upgrade_finishes(
    empty_db: DatabaseConfig, checkout: Path
) -> None:
    versions = checkout / "migrations" / "versions"
    write_revision(
        versions,
        "51ee9a000001",
        HEAD,
        upgrade=[
            "CREATE TABLE slow_one (id integer)",
            "SELECT pg_sleep(0.2)",
            "CREATE INDEX idx_slow_one ON slow_one (id)",
        ],
        downgrade=["DROP TABLE slow_one"],
        doc="Slow",
    )
    env = cli_env(empty_db, UAIP_DB_ROOT=str(checkout))
    with psycopg.connect(**empty_db.connect_kwargs(), autocommit=True):
        pass
    for delay in (0.35, 0.5, 0.7, 0.9, 1.2):
        proc = subprocess.Popen(
            [str(BIN / "inv"), "db.upgrade"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        finish = run_inv("db.upgrade", database=empty_db, env={"UAIP_DB_ROOT": str(checkout)})
        assert finish.returncode == 0, finish.stderr
        assert applied.current_revisions(empty_db) == ("51ee9a000001",)
        tables = sql(empty_db, "SELECT count(*) FROM pg_tables WHERE tablename = 'slow_one'")
        assert tables == [(1,)]
        valid = sql(empty_db, "SELECT bool_and(indisvalid) FROM pg_index")
        assert valid == [(True,)]
        assert diff(expected.snapshot(HEAD), _without_slow(take(empty_db))) == []
        runner.downgrade(empty_db, "base")


def _without_slow(snapshot):  # type: ignore[no-untyped-def]
    from uaip_db.catalog.snapshot import Snapshot

    return Snapshot({k: v for k, v in snapshot.objects.items() if "slow_one" not in k})


def test_a_lock_timeout_is_retried_then_reported(head_db: DatabaseConfig) -> None:
    runner.downgrade(head_db, EMAIL)
    with psycopg.connect(**head_db.connect_kwargs()) as blocker:
        blocker.execute("LOCK TABLE sessions IN ACCESS SHARE MODE")
        result = run_inv(
            "db.upgrade",
            database=head_db,
            env={"UAIP_LOCK_TIMEOUT": "200ms", "UAIP_LOCK_RETRIES": "1"},
        )
        blocker.rollback()
    assert result.returncode == 1
    assert "could not take a lock within lock_timeout" in result.stderr
    assert "Gave up after 2 attempt(s)" in result.stderr
    assert re.search(r"Trying again in \d+\.\d s", result.stdout)
    assert applied.current_revisions(head_db) == (EMAIL,)


def test_a_lock_released_during_the_retries_lets_the_upgrade_through(
    head_db: DatabaseConfig,
) -> None:
    runner.downgrade(head_db, EMAIL)
    blocker = psycopg.connect(**head_db.connect_kwargs())
    blocker.execute("LOCK TABLE sessions IN ACCESS SHARE MODE")

    def release_after_the_first_attempt_waited() -> None:
        with psycopg.connect(**head_db.connect_kwargs(), autocommit=True) as probe:
            until(lambda: bool(probe.execute(WAITING_FOR_SESSIONS).fetchone()))
        time.sleep(0.4)  # past the 200 ms lock_timeout: that attempt fails; the retry is 1 s later
        blocker.close()

    threading.Thread(target=release_after_the_first_attempt_waited).start()
    result = run_inv(
        "db.upgrade",
        database=head_db,
        env={"UAIP_LOCK_TIMEOUT": "200ms", "UAIP_LOCK_RETRIES": "3"},
    )
    assert result.returncode == 0, result.stderr
    assert "Trying again" in result.stdout
    assert applied.current_revisions(head_db) == (HEAD,)


@pytest.mark.parametrize(
    "args",
    [
        ["db.downgrade"],
        ["db.downgrade", "--yes"],
        ["db.downgrade", "--yes", "--confirm-db", "some_other_db"],
        ["db.stamp", "--rev", EMAIL, "--force"],
    ],
)
def test_production_refuses_without_yes_and_the_name(
    head_db: DatabaseConfig, args: list[str]
) -> None:
    result = run_inv(*args, database=head_db, env={"DB_ENV": "production"})
    assert result.returncode == 2
    assert f"--yes --confirm-db {head_db.name}" in result.stderr
    assert applied.current_revisions(head_db) == (HEAD,)


def test_production_goes_on_with_yes_and_the_name_after_a_backup(
    head_db: DatabaseConfig, tmp_path: Path
) -> None:
    result = run_inv(
        "db.downgrade",
        "--yes",
        "--confirm-db",
        head_db.name,
        database=head_db,
        env={"DB_ENV": "production", "UAIP_BACKUP_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert "Taking a verified backup first (DB_ENV=production)" in result.stdout
    assert len(list(tmp_path.glob("*/manifest.json"))) == 1
    assert applied.current_revisions(head_db) == (CHAIN[-2],)


def test_outside_production_a_data_dropping_downgrade_asks_for_yes(head_db: DatabaseConfig) -> None:
    result = run_inv("db.downgrade", "--rev", "03033cebb647", database=head_db)
    assert result.returncode == 2
    assert "drops sessions.email" in result.stdout
    assert "--yes" in result.stderr
    assert applied.current_revisions(head_db) == (HEAD,)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u:p@h:port/db", "its port is not a number"),
        ("mysql://u:p@h/db", "DATABASE_URL is not a PostgreSQL URL"),
        ("postgresql://u:secret-pw@h:5432", "it names no database"),
    ],
)
def test_malformed_database_url(url: str, message: str) -> None:
    result = run_inv("db.current", env={"DATABASE_URL": url})
    assert result.returncode == 2
    assert message in result.stderr
    assert "secret-pw" not in result.stderr and "Traceback" not in result.stderr


def test_a_dotenv_without_the_password(empty_db: DatabaseConfig, checkout: Path) -> None:
    (checkout / ".env").write_text(
        f"DB_HOST={empty_db.host}\nDB_PORT={empty_db.port}\nDB_NAME={empty_db.name}\n"
        f"DB_USER={empty_db.user}\nDB_PASSWORD=\n"
    )
    # A child: the checkout's own .env, which the test process never reads.
    result = run_cli("inv", "db.current", cwd=checkout, env={"UAIP_DB_ROOT": str(checkout)})
    assert result.returncode == 2
    assert "password was refused" in result.stderr and "DB_PASSWORD" in result.stderr


def test_tasks_from_an_unrelated_directory(head_db: DatabaseConfig, tmp_path: Path) -> None:
    # A child started there: what finds tasks.py and the package is the process's own start.
    result = run_cli("inv", "-r", str(ROOT), "db.current", database=head_db, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(HEAD)


def test_a_bad_timeout_setting(empty_db: DatabaseConfig) -> None:
    result = run_inv("db.upgrade", database=empty_db, env={"UAIP_LOCK_TIMEOUT": "soon"})
    assert result.returncode == 2
    assert "UAIP_LOCK_TIMEOUT='soon' is not a duration" in result.stderr


def test_no_password_in_process_arguments_or_server_logs(server, empty_db: DatabaseConfig) -> None:  # type: ignore[no-untyped-def]
    runner.upgrade(empty_db, "head")
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().decode(errors="replace")
        except OSError:
            continue
        assert empty_db.password not in text
    log = server.cluster.cluster.log if server.cluster else None
    if log is not None:
        assert empty_db.password not in log.read_text(errors="replace")


def test_stamping_an_unknown_revision(head_db: DatabaseConfig) -> None:
    result = run_inv("db.stamp", "--rev", "deadbeef", database=head_db)
    assert result.returncode == 2
    assert "Unknown revision 'deadbeef'" in result.stderr and "Traceback" not in result.stderr


def test_status_and_current_with_a_revision_the_scripts_do_not_know(
    head_db: DatabaseConfig,
) -> None:
    sql(head_db, "UPDATE alembic_version SET version_num = 'feedface0000'")
    status = run_inv("db.status", database=head_db)
    assert status.returncode == 0, status.stderr
    assert "feedface0000 is not in these migration scripts" in status.stdout
    current = run_inv("db.current", database=head_db)
    assert current.returncode == 0 and "unknown to these scripts" in current.stdout


def test_upgrading_an_init_sql_database_without_a_stamp_says_what_to_do(
    empty_db: DatabaseConfig,
) -> None:
    from uaip_db.migrations.baseline import seed

    seed(empty_db)
    result = run_inv("db.upgrade", database=empty_db)
    assert result.returncode == 1
    assert 'relation "sessions" already exists' in result.stderr
    assert "inv db.stamp --rev auto" in result.stderr
    assert "Traceback" not in result.stderr


def test_plain_alembic_waits_as_long_as_uaip_lock_wait_says(empty_db: DatabaseConfig) -> None:
    from uaip_db.migrations.lock import migration_lock

    def opener() -> psycopg.Connection:  # type: ignore[type-arg]
        return psycopg.connect(**empty_db.connect_kwargs())

    with migration_lock(opener):
        result = run_cli(
            "alembic", "upgrade", "head", database=empty_db, env={"UAIP_LOCK_WAIT": "0.5"}
        )
    assert result.returncode != 0
    assert "Another migration holds the lock" in result.stderr and "UAIP_LOCK_WAIT" in result.stderr


def test_restoring_a_missing_backup(head_db: DatabaseConfig, tmp_path: Path) -> None:
    result = run_inv("db.restore", str(tmp_path / "gone"), database=head_db)
    assert result.returncode == 2
    assert "No backup at" in result.stderr and "Traceback" not in result.stderr


def test_restoring_over_a_database_in_production_needs_the_name(
    head_db: DatabaseConfig, tmp_path: Path
) -> None:
    env = {"UAIP_BACKUP_DIR": str(tmp_path)}
    assert run_inv("db.backup", "--no-verify", database=head_db, env=env).returncode == 0
    backup = next(p for p in tmp_path.iterdir() if p.is_dir())  # beside it: the folder's lock
    refused = run_inv(
        "db.restore",
        str(backup),
        "--target",
        head_db.name,
        "--yes",
        database=head_db,
        env={**env, "DB_ENV": "production"},
    )
    assert refused.returncode == 2
    assert f"--yes --confirm-db {head_db.name}" in refused.stderr


def test_a_downgrade_whose_plan_changed_while_it_waited_reverts_nothing(
    head_db: DatabaseConfig,
) -> None:
    from uaip_db.migrations.lock import migration_lock

    def opener() -> psycopg.Connection:  # type: ignore[type-arg]
        return psycopg.connect(**head_db.connect_kwargs())

    env = cli_env(head_db)
    with migration_lock(opener):
        waiting = subprocess.Popen(
            [str(BIN / "inv"), "db.downgrade", "--yes"],
            cwd=ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # Its lock connection appears once it has planned "revert HEAD" and waits for the lock.
        with psycopg.connect(**head_db.connect_kwargs(), autocommit=True) as probe:
            until(lambda: bool(probe.execute(MIGRATION_CONNECTION).fetchone()))
        runner.downgrade(head_db, WIDEN, lock_held=True)
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 2, out + err
    assert "The database changed while this downgrade waited" in err
    assert applied.current_revisions(head_db) == (WIDEN,)


def test_lint_since_an_unknown_revision() -> None:
    result = run_inv("db.lint", "--since", "abc")
    assert result.returncode == 2 and "Unknown revision 'abc'" in result.stderr
    assert "Traceback" not in result.stderr


def test_downgrade_from_a_revision_the_scripts_do_not_know(head_db: DatabaseConfig) -> None:
    sql(head_db, "UPDATE alembic_version SET version_num = 'deadbeef1234'")
    result = run_inv("db.downgrade", database=head_db)
    assert result.returncode == 1
    assert "deadbeef1234, which these migration scripts do not know" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["abc", "-1"])
def test_a_bad_lock_wait(empty_db: DatabaseConfig, value: str) -> None:
    result = run_inv("db.upgrade", f"--lock-wait={value}", database=empty_db)
    assert result.returncode == 2 and "is not a number of seconds" in result.stderr


def test_release_check_refuses_two_heads(
    head_db: DatabaseConfig, checkout: Path, tmp_path: Path
) -> None:
    write_revision(checkout / "migrations" / "versions", "aaaa00000009", WIDEN, ["SELECT 1"], [])
    result = run_inv(
        "release.check",
        database=head_db,
        env={"UAIP_DB_ROOT": str(checkout), "UAIP_BACKUP_DIR": str(tmp_path)},
    )
    assert result.returncode == 1 and "2 heads" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_stamp_checks_the_schema_again_under_the_lock(empty_db: DatabaseConfig) -> None:
    from uaip_db.migrations.lock import migration_lock

    runner.upgrade(empty_db, EMAIL)
    sql(empty_db, "DELETE FROM alembic_version")  # the schema of EMAIL, recorded nowhere

    def opener() -> psycopg.Connection:  # type: ignore[type-arg]
        return psycopg.connect(**empty_db.connect_kwargs())

    env = cli_env(empty_db)
    with migration_lock(opener):
        waiting = subprocess.Popen(
            [str(BIN / "inv"), "db.stamp", "--rev", "auto"],
            cwd=ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # It found EMAIL's schema and now waits for the lock; meanwhile another runner upgrades.
        with psycopg.connect(**empty_db.connect_kwargs(), autocommit=True) as probe:
            until(lambda: bool(probe.execute(MIGRATION_CONNECTION).fetchone()))
        runner.stamp(empty_db, EMAIL, lock_held=True)
        runner.upgrade(empty_db, "head", lock_held=True)
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 2, out + err
    assert "The schema changed while this stamp waited" in err
    assert applied.current_revisions(empty_db) == (HEAD,)


def test_a_failed_concurrent_drop_leaves_no_invalid_index_unnoticed(
    empty_db: DatabaseConfig,
) -> None:
    runner.upgrade(empty_db, EMAIL)
    # An old transaction: DROP INDEX CONCURRENTLY marks the index INVALID, then waits for it.
    reader = psycopg.connect(**empty_db.connect_kwargs())
    reader.execute("SELECT count(*) FROM sessions")
    invalid = "SELECT count(*) FROM pg_index WHERE NOT indisvalid"
    try:
        failed = run_inv(
            "db.downgrade",
            "--yes",
            database=empty_db,
            env={"UAIP_LOCK_TIMEOUT": "300ms", "UAIP_LOCK_RETRIES": "0"},
        )
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert applied.current_revisions(empty_db) == (EMAIL,)
        assert sql(empty_db, invalid) == [(1,)]
        checked = run_inv("db.check", database=empty_db)
        assert checked.returncode == 1
        assert "Index idx_sessions_email is INVALID" in checked.stderr
    finally:
        reader.close()
    upgraded = run_inv("db.upgrade", database=empty_db)
    assert upgraded.returncode == 1, upgraded.stdout  # at head, but never "nothing to do"
    assert "Index idx_sessions_email is INVALID" in upgraded.stderr
    assert applied.current_revisions(empty_db) == (HEAD,)


def test_the_lock_survives_idle_session_timeout(empty_db: DatabaseConfig, checkout: Path) -> None:
    runner.upgrade(empty_db, "head")
    write_revision(
        checkout / "migrations" / "versions",
        "51ee9a000002",
        HEAD,
        upgrade=[
            "CREATE SEQUENCE IF NOT EXISTS slow_runs",
            "SELECT nextval('slow_runs')",
            "SELECT pg_sleep(1.5)",
        ],
        downgrade=["DROP SEQUENCE IF EXISTS slow_runs"],
    )
    # The lock's connection idles while the migration runs: this would end it after 300 ms.
    sql(empty_db, f"ALTER DATABASE \"{empty_db.name}\" SET idle_session_timeout = '300ms'")
    procs, outputs = upgrades_at_once(2, empty_db, UAIP_DB_ROOT=str(checkout))
    assert [proc.returncode for proc in procs] == [0, 0], [err for _, err in outputs]
    assert sql(empty_db, "SELECT last_value FROM slow_runs") == [(1,)]
    assert applied.current_revisions(empty_db) == ("51ee9a000002",)


WRITER_STALL_LIMIT = 1.0


@pytest.mark.parametrize("how", ["inv", "alembic", "downgrade"])
def test_writers_never_wait_a_second_behind_a_migration(empty_db: DatabaseConfig, how: str) -> None:
    """A report holds a read lock on sessions for 3 s while writers keep writing and the schema
    changes: every migration statement queued for its lock gives up (and is retried) before any
    writer behind it has waited a second."""
    runner.upgrade(empty_db, BASELINE if how != "downgrade" else HEAD)
    sql(empty_db, "INSERT INTO sessions (user_id) SELECT 'w' || g FROM generate_series(1, 20) g")
    report = psycopg.connect(**empty_db.connect_kwargs())
    report.execute("LOCK TABLE sessions IN ACCESS SHARE MODE")
    stalls: list[float] = []
    errors: list[str] = []
    stop = threading.Event()

    def write(number: int) -> None:
        with psycopg.connect(**empty_db.connect_kwargs(), autocommit=True) as conn:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    conn.execute(
                        "UPDATE sessions SET current_stage = current_stage WHERE user_id = %s",
                        (f"w{number}",),
                    )
                except psycopg.Error as error:
                    errors.append(str(error))
                stalls.append(time.monotonic() - started)
                time.sleep(0.02)

    writers = [threading.Thread(target=write, args=(n,)) for n in range(1, 5)]
    for writer in writers:
        writer.start()
    threading.Timer(3.0, report.close).start()
    command = {
        "inv": ["inv", "db.upgrade"],
        "alembic": ["alembic", "upgrade", "head"],
        "downgrade": ["inv", "db.downgrade", "--rev", EMAIL, "--yes"],
    }[how]
    try:
        result = run_cli(*command, database=empty_db)
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    assert result.returncode == 0, result.stdout + result.stderr
    assert errors == []
    assert max(stalls) < WRITER_STALL_LIMIT, f"a writer waited {max(stalls):.2f} s"
    wanted = EMAIL if how == "downgrade" else HEAD
    assert applied.current_revisions(empty_db) == (wanted,)


def test_a_handed_lock_connection_the_server_ended_meanwhile_is_replaced(
    empty_db: DatabaseConfig,
) -> None:
    """The plan's connection becomes the lock's; when the server ended it while it idled
    (idle_session_timeout while Alembic loads: CI saw "Revision failed: terminating connection
    due to idle-session timeout"), the lock takes a connection of its own."""
    handed = psycopg.connect(**empty_db.connect_kwargs(), autocommit=True)
    pid = handed.info.backend_pid
    sql(empty_db, "SELECT pg_terminate_backend(%s)", (pid,))
    runner.upgrade(empty_db, "head", lock_connection=handed)
    assert applied.current_revisions(empty_db) == (HEAD,)
    assert handed.closed
