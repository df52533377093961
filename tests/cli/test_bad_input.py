"""Bad settings and arguments: one or two plain lines, the documented exit status, no traceback,
nothing changed."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.conftest import BIN, CHAIN, EMAIL, HEAD, ROOT, cli_env, run_cli, run_inv, sql
from tests.servers.roles import limited_role
from tests.servers.standby import hot_standby
from uaip_db import pg
from uaip_db.migrations import applied, runner
from uaip_db.migrations.baseline import BASELINE_REVISION, seed
from uaip_db.servers.local import find_bindir
from uaip_db.servers.scratch import (
    ScratchCluster,
    ScratchServer,
    free_port,
    launch_postgres,
    stop_process,
)
from uaip_db.settings import DatabaseConfig

INI = str(ROOT / "alembic.ini")


def one_clean_line(result: subprocess.CompletedProcess[str], status: int) -> None:
    assert result.returncode == status, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert 1 <= len(result.stderr.strip().splitlines()) <= 2, result.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"UAIP_LOCK_RETRIES": "-1"}, "UAIP_LOCK_RETRIES='-1'"),
        ({"UAIP_LOCK_RETRIES": "abc"}, "UAIP_LOCK_RETRIES='abc'"),
        ({"UAIP_LOCK_TIMEOUT": "5 s"}, "UAIP_LOCK_TIMEOUT='5 s'"),
        # Beyond what PostgreSQL takes: it was a connection failure at the first revision.
        ({"UAIP_LOCK_TIMEOUT": "100000h"}, "UAIP_LOCK_TIMEOUT='100000h'"),
        ({"UAIP_STATEMENT_TIMEOUT": "30d"}, "UAIP_STATEMENT_TIMEOUT='30d'"),
    ],
)
def test_bad_migration_settings_change_nothing(
    empty_db: DatabaseConfig, env: dict[str, str], named: str
) -> None:
    result = run_inv("db.upgrade", database=empty_db, env=env)
    one_clean_line(result, 2)
    assert named in result.stderr
    assert applied.current_revisions(empty_db) == ()


def test_a_bad_lock_wait_under_plain_alembic(empty_db: DatabaseConfig, tmp_path: Path) -> None:
    result = run_cli(
        "alembic",
        "-c",
        INI,
        "upgrade",
        "head",
        database=empty_db,
        cwd=tmp_path,
        env={"UAIP_LOCK_WAIT": "abc"},
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "UAIP_LOCK_WAIT='abc'" in result.stderr
    assert applied.current_revisions(empty_db) == ()


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"DB_PASSWORD=caf\xe9\n", "is not UTF-8 text"),
        (b'DB_NAME=mine\nDB_PASSWORD="unterminated\n', ".env line 2 is not a setting"),
    ],
)
def test_a_dotenv_that_cannot_be_read(tmp_path: Path, content: bytes, said: str) -> None:
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("alembic.ini", "migrations", "database", "tasks.py"):
        (root / name).symlink_to(ROOT / name)
    (root / ".env").write_bytes(content)
    result = run_cli("inv", "db.current", cwd=root, env={"UAIP_DB_ROOT": str(root)})
    one_clean_line(result, 2)
    assert said in result.stderr and "unterminated" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # ours alone


@pytest.mark.parametrize("task", ["db.upgrade", "db.downgrade"])
def test_an_empty_revision(head_db: DatabaseConfig, task: str) -> None:
    result = run_inv(task, "--rev", "", database=head_db)
    one_clean_line(result, 2)
    assert "--rev needs" in result.stderr
    assert applied.current_revisions(head_db) == (HEAD,)


@pytest.mark.parametrize(
    "args", [["db.upgrade", "--bogus"], ["db.restore"], ["db.upgrade", "--rev"]]
)
def test_invoke_usage_errors_exit_2(args: list[str]) -> None:
    result = run_inv(*args)
    one_clean_line(result, 2)
    assert "inv --help TASK" in result.stderr


def test_an_unknown_task_points_at_the_list_of_tasks() -> None:
    result = run_inv("db.upgrad")
    one_clean_line(result, 2)
    assert "'db.upgrad'" in result.stderr and "inv --list" in result.stderr


def test_ctrl_d_at_the_prompt_stops(head_db: DatabaseConfig) -> None:
    env = cli_env(head_db)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [str(BIN / "inv"), "db.downgrade", "--rev", "base"],
        cwd=ROOT,
        env=env,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + 60
    while b"Go on?" not in seen and time.monotonic() < deadline:
        if select.select([controller], [], [], 0.1)[0]:
            seen += os.read(controller, 4096)
    assert b"Go on?" in seen
    os.write(controller, b"\x04")  # Ctrl-D
    assert process.wait(timeout=60) == 1
    while select.select([controller], [], [], 0.2)[0]:
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(controller)
    assert b"Stopped; nothing was changed." in seen and b"Traceback" not in seen
    assert applied.current_revisions(head_db) == (HEAD,)


def test_ctrl_c_during_a_concurrent_index_build(empty_db: DatabaseConfig) -> None:
    runner.upgrade(empty_db, BASELINE_REVISION)
    # A transaction with an old snapshot on another table: the build waits for it to end.
    reader = psycopg.connect(**empty_db.connect_kwargs())
    reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    reader.execute("SELECT count(*) FROM checkpoints")
    env = cli_env(empty_db, UAIP_LOCK_TIMEOUT="60s")
    process = subprocess.Popen(
        [str(BIN / "inv"), "db.upgrade", "--rev", EMAIL],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # As at a terminal: a suite started in the background (`pytest &`, nohup) passes SIGINT
        # on ignored, and Python then never turns it into KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        building = (
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'CREATE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock'"
        )
        deadline = time.monotonic() + 60
        while not sql(empty_db, building):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=60)
    finally:
        reader.close()
    assert process.returncode == 130, err
    assert "Interrupted" in err and "Traceback" not in err
    assert "reconnect" not in err
    assert applied.current_revisions(empty_db) == (BASELINE_REVISION,)


def test_a_lock_timeout_inside_a_concurrent_build_is_named_and_retried(
    empty_db: DatabaseConfig,
) -> None:
    runner.upgrade(empty_db, BASELINE_REVISION)
    reader = psycopg.connect(**empty_db.connect_kwargs())
    reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    reader.execute("SELECT count(*) FROM checkpoints")  # the index build waits for it
    try:
        result = run_inv(
            "db.upgrade",
            "--rev",
            EMAIL,
            database=empty_db,
            env={"UAIP_LOCK_TIMEOUT": "200ms", "UAIP_LOCK_RETRIES": "1"},
        )
    finally:
        reader.close()
    assert result.returncode == 1
    assert "could not take a lock within lock_timeout" in result.stderr
    assert "CREATE INDEX CONCURRENTLY" in result.stderr and "inactive" not in result.stderr
    assert "Trying again" in result.stdout


# --- read-only servers and missing privileges: the cause is named, not the migration -----------


@dataclass(frozen=True)
class Standby:
    seeded: DatabaseConfig  # init.sql loaded, no revision recorded
    behind: DatabaseConfig  # one revision behind head


@pytest.fixture(scope="module")
def standby(server: ScratchServer) -> Iterator[Standby]:
    """A hot standby of the test server (pg_basebackup -R), holding two databases."""
    seeded = server.create_database("uaip_seeded")
    seed(seeded)
    behind = server.create_database("uaip_behind")
    runner.upgrade(behind, CHAIN[-2])
    try:
        with hot_standby(server) as replica:
            yield Standby(replica.with_database(seeded.name), replica.with_database(behind.name))
    finally:
        server.drop_database(seeded.name)
        server.drop_database(behind.name)


def names_the_standby(result: subprocess.CompletedProcess[str]) -> None:
    one_clean_line(result, 2)
    assert "hot standby" in result.stderr
    assert "fix the migration" not in result.stderr and "run `inv db.upgrade`" not in result.stderr


@pytest.mark.parametrize(
    "args", [["db.stamp", "--rev", "auto"], ["db.stamp", "--rev", BASELINE_REVISION]]
)
def test_a_stamp_on_a_hot_standby_says_it_is_a_standby(standby: Standby, args: list[str]) -> None:
    names_the_standby(run_inv(*args, database=standby.seeded))
    assert applied.current_revisions(standby.seeded) == ()


def test_an_upgrade_on_a_hot_standby_says_it_is_a_standby(standby: Standby) -> None:
    names_the_standby(run_inv("db.upgrade", database=standby.behind))
    assert applied.current_revisions(standby.behind) == (CHAIN[-2],)


@pytest.mark.parametrize("place", ["UAIP_SCRATCH", "UAIP_TEST_SERVER"])
def test_a_backup_check_on_a_hot_standby_names_the_setting_not_drop_database(
    standby: Standby, tmp_path: Path, place: str
) -> None:
    env = {"UAIP_BACKUP_DIR": str(tmp_path), place: "env"}
    result = run_inv("db.backup", database=standby.behind, env=env)
    names_the_standby(result)
    assert "UAIP_SCRATCH_URL" in result.stderr and "DROP DATABASE" not in result.stderr


def test_a_database_read_only_by_default_is_named(empty_db: DatabaseConfig) -> None:
    runner.upgrade(empty_db, CHAIN[-2])
    sql(
        empty_db,
        f'ALTER DATABASE "{empty_db.name}" SET default_transaction_read_only = on',
    )
    result = run_inv("db.upgrade", database=empty_db)
    one_clean_line(result, 2)
    assert "default_transaction_read_only is on" in result.stderr
    assert "fix the migration" not in result.stderr
    assert applied.current_revisions(empty_db) == (CHAIN[-2],)


def test_a_missing_privilege_is_named_not_the_migration(
    server: ScratchServer, empty_db: DatabaseConfig
) -> None:
    runner.upgrade(empty_db, CHAIN[-2])
    with limited_role(server) as role:
        # It may connect and record revisions, but owns none of the tables a revision alters.
        sql(empty_db, f'GRANT ALL ON SCHEMA public TO "{role.user}"')
        sql(empty_db, f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role.user}"')
        result = run_inv("db.upgrade", database=role.with_database(empty_db.name))
        sql(empty_db, f'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{role.user}"')
        sql(empty_db, f'REVOKE ALL ON SCHEMA public FROM "{role.user}"')
    one_clean_line(result, 2)
    assert f"The role {role.user} lacks a privilege" in result.stderr
    assert "must be owner" in result.stderr or "permission denied" in result.stderr
    assert "fix the migration" not in result.stderr
    assert applied.current_revisions(empty_db) == (CHAIN[-2],)


@pytest.mark.parametrize(
    "env",
    [{"UAIP_SCRATCH": "yes"}, {"UAIP_SCRATCH_URL": "postgresql://admin@db:99999/postgres"}],
)
def test_a_bad_place_for_throwaway_databases_changes_nothing(
    head_db: DatabaseConfig, tmp_path: Path, env: dict[str, str]
) -> None:
    result = run_inv("db.backup", database=head_db, env={**env, "UAIP_BACKUP_DIR": str(tmp_path)})
    one_clean_line(result, 2)
    assert next(iter(env)) in result.stderr
    assert not [path for path in tmp_path.iterdir() if path.is_dir()]


# A checkout mounted read-only (as in a container with a read-only volume), or one this account
# may not write to. Root ignores file modes, so as root a read-only bind mount in a private mount
# namespace (unshare -m) stands in, and ends with the command; another account gets folders it
# may not write.
READ_ONLY = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'


@contextlib.contextmanager
def unwritable(checkout: Path) -> Iterator[list[str]]:
    """The command prefix that runs a program in `checkout` made unwritable."""
    if os.geteuid() == 0:
        yield ["unshare", "-m", "sh", "-c", READ_ONLY, "sh", str(checkout)]
        return
    folders = [
        checkout,
        *(path for path in checkout.rglob("*") if path.is_dir() and not path.is_symlink()),
    ]
    for folder in folders:
        folder.chmod(0o555)
    try:
        yield []
    finally:
        for folder in folders:
            folder.chmod(0o755)


@pytest.mark.parametrize(
    "task",
    [["db.revision", "-m", "add a thing"], ["db.docs"], ["release.check"]],
    ids=lambda task: task[0],
)
def test_a_read_only_checkout_is_one_line(
    checkout: Path, head_db: DatabaseConfig, tmp_path: Path, task: list[str]
) -> None:
    before = sorted(str(path) for path in checkout.rglob("*"))
    env = cli_env(head_db, UAIP_BACKUP_DIR=str(tmp_path / "backups"))
    with unwritable(checkout) as prefix:
        result = subprocess.run(
            [*prefix, str(BIN / "inv"), *task],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    one_clean_line(result, 2)
    assert f"Cannot write {checkout}/" in result.stderr
    assert "Read-only file system" in result.stderr or "Permission denied" in result.stderr
    assert sorted(str(path) for path in checkout.rglob("*")) == before
    # Said before any work: no backup dumped (and rehearsed) only to find nowhere to report it.
    assert not (tmp_path / "backups").exists() or not any((tmp_path / "backups").iterdir())


def test_pg_dump_out_of_shared_locks_keeps_the_servers_hint(tmp_path: Path) -> None:
    # A private server whose lock table is small (max_locks_per_transaction x connections)
    # and a database with more tables than it can lock at once, as pg_dump must. The manifest's
    # row counts lock them too, in the transaction whose snapshot pg_dump imports: whichever
    # runs out first, the server's message and hint are what the user reads. The second run
    # starts pg_dump late, so the row counts always fail first.
    late_bindir = tmp_path / "late-bin"
    late_bindir.mkdir()
    real_bindir = find_bindir()
    assert real_bindir is not None
    for tool in real_bindir.iterdir():
        (late_bindir / tool.name).symlink_to(tool)
    (late_bindir / "pg_dump").unlink()
    (late_bindir / "pg_dump").write_text(
        f'#!/bin/sh\n[ "$1" = --version ] || sleep 1\nexec {real_bindir / "pg_dump"} "$@"\n'
    )
    (late_bindir / "pg_dump").chmod(0o755)
    scratch = ScratchCluster.start()
    try:
        with pg.connection(scratch.admin) as conn:
            conn.execute("ALTER SYSTEM SET max_locks_per_transaction = 10")
            conn.execute("ALTER SYSTEM SET max_connections = 5")
        stop_process(scratch.process)
        scratch.process = launch_postgres(scratch.cluster, scratch.admin.port)
        scratch.cluster.wait_until_ready(scratch.process.pid, timeout=60, child=scratch.process)
        many = scratch.admin.with_database("uaip_many")
        with pg.connection(scratch.admin) as conn:
            pg.create_database(conn, many.name)
        with pg.connection(many) as conn:
            for number in range(1500):
                conn.execute(f"CREATE TABLE t{number} (id int)")
        results = [
            run_cli(
                "inv",
                "db.backup",
                "--no-verify",
                database=many,
                env={"UAIP_BACKUP_DIR": str(tmp_path / "backups"), **extra},
            )
            for extra in ({}, {"PG_BINDIR": str(late_bindir)})
        ]
    finally:
        scratch.stop()
    for result in results:
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert 1 <= len(result.stderr.strip().splitlines()) <= 2, result.stderr
        assert "out of shared memory" in result.stderr
        assert "increase max_locks_per_transaction" in result.stderr
    assert not [path for path in (tmp_path / "backups").iterdir() if path.is_dir()]


def test_a_server_error_explained_keeps_its_hint(empty_db: DatabaseConfig) -> None:
    with pg.connection(empty_db) as conn, pytest.raises(psycopg.Error) as raised:
        conn.execute("SELECT no_such_function(1)")
    said = str(pg.explain(raised.value, empty_db))
    assert "function no_such_function(integer) does not exist" in said
    assert "(HINT: No function matches the given name and argument types." in said


def with_stdout_closed(
    *args: str, database: DatabaseConfig | None = None
) -> subprocess.CompletedProcess[str]:
    """`inv ARGS | head -0`: the reader of stdout is gone before inv writes its first line."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [str(BIN / "inv"), *args],
            cwd=ROOT,
            env=cli_env(database),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    finally:
        os.close(write_end)


def test_a_reader_that_leaves_early_ends_inv_quietly() -> None:
    """`inv --list | head -1`: the pipe closes before inv writes; no traceback follows."""
    result = with_stdout_closed("--list")
    assert result.returncode != 0
    assert result.stderr == ""


def test_a_reader_that_leaves_early_stops_no_upgrade_halfway(empty_db: DatabaseConfig) -> None:
    result = with_stdout_closed("db.upgrade", database=empty_db)
    assert (result.returncode, result.stderr) == (0, "")
    assert applied.current_revisions(empty_db) == (HEAD,), "the upgrade went on to its end"


def test_a_reader_that_leaves_early_keeps_the_exit_status_and_the_line() -> None:
    nowhere = DatabaseConfig(host="127.0.0.1", port=free_port(), password="secret-xyz")
    result = with_stdout_closed("db.check", "--json", database=nowhere)
    assert result.returncode == 2, result.stderr
    assert "No PostgreSQL server answers" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_debug_shows_the_traceback_and_keeps_the_exit_status() -> None:
    import json

    nowhere = DatabaseConfig(host="127.0.0.1", port=free_port(), password="secret-xyz")
    result = run_inv("db.check", "--json", database=nowhere, env={"UAIP_DEBUG": "1"})
    assert result.returncode == 2, "a connection problem, as without UAIP_DEBUG"
    assert "Traceback (most recent call last)" in result.stderr
    assert json.loads(result.stdout)["exit_code"] == 2


def test_a_usage_error_under_json_is_json_too() -> None:
    import json

    result = run_inv("db.check", "--json", "--bogus")
    assert result.returncode == 2
    assert json.loads(result.stdout) == {"error": result.stderr.strip(), "exit_code": 2}
    assert "No idea what '--bogus' is" in result.stderr


def test_a_query_given_to_db_psql_as_a_word_is_pointed_at_command() -> None:
    result = run_cli("inv", "db.psql", "select 1")
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        'db.psql takes its SQL as --command: `inv db.psql --command "select 1"`.'
    )
