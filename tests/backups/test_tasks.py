"""db.backup, db.restore and db.rehearse as a person runs them: exit statuses, one-line errors,
nothing lost that was not named, nothing restored into that was not confirmed, and every restore
and rehearsal says whether its backup was verified."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.backups.conftest import cut_manifest, exists, hashes, rewrite_manifest
from tests.conftest import BIN, ROOT, cli_env, pages, run_inv, small_disk, sql
from tests.servers.roles import limited_role
from uaip_db.backups import dump
from uaip_db.backups import folder as folders
from uaip_db.backups import manifest as manifests
from uaip_db.backups.dump import create_backup
from uaip_db.migrations import applied, history, runner
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig

PUBLIC_RELATIONS = "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
RESTORE_IT = re.compile(r"^Restore it with: inv db\.restore (\S+)$", re.MULTILINE)


def one_line_error(result: subprocess.CompletedProcess[str], database: DatabaseConfig) -> str:
    """The error a person sees: one line on stderr, no traceback, no password."""
    assert "Traceback" not in result.stderr + result.stdout
    assert database.password not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def made_path(result: subprocess.CompletedProcess[str]) -> Path:
    found = RESTORE_IT.search(result.stdout)
    assert found, result.stdout + result.stderr
    return Path(found.group(1))


def final_folders(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def unfinished(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.startswith(".partial-"))


def start_cli(*args: str, database: DatabaseConfig, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "inv"), *args],
        cwd=ROOT,
        env=cli_env(database, **env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def until_found(find: Callable[[], int | None], timeout: float = 60.0) -> int:
    """The first value `find` returns that is not None: asking again could miss it (a session
    that is idle now may be running its next statement then)."""
    deadline = time.monotonic() + timeout
    while (found := find()) is None:
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
    return found


def kill(child: subprocess.Popen[str]) -> None:
    """SIGKILL the run and its children (pg_dump, pg_restore): no handler runs."""
    os.killpg(child.pid, signal.SIGKILL)
    child.communicate(timeout=60)


# --- db.backup: arguments and folders -------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["db.backup", "--keep", "0"], "--keep '0' is not a number of backups"),
        (["db.backup", "--keep", "abc"], "--keep 'abc' is not a number of backups"),
        (["db.backup", "--jobs", "abc"], "--jobs 'abc' is not a number of parallel jobs"),
        (["db.backup", "--jobs", "0"], "--jobs '0' is not a number of parallel jobs"),
        (["db.restore", "somewhere", "--jobs", "abc"], "--jobs 'abc' is not a number"),
    ],
)
def test_counts_must_be_whole_numbers(
    head_db: DatabaseConfig, tmp_path: Path, args: list[str], named: str
) -> None:
    env = {"UAIP_BACKUP_DIR": str(tmp_path / "backups")}
    result = run_inv(*args, database=head_db, env=env)
    assert result.returncode == 2
    assert named in one_line_error(result, head_db)
    assert not (tmp_path / "backups").exists()


@pytest.mark.parametrize("problem", ["under a file", "a file"])
def test_a_backup_folder_that_cannot_be_used(
    head_db: DatabaseConfig, tmp_path: Path, problem: str
) -> None:
    target = tmp_path / "nowhere"
    if problem == "a file":
        target.write_text("")
    else:
        (tmp_path / "a-file").write_text("")
        target = tmp_path / "a-file" / "nowhere"
    result = run_inv("db.backup", "--out", str(target), database=head_db)
    assert result.returncode == 2
    assert f"Backup folder {target} does not exist" in result.stderr
    assert head_db.password not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("problem", ["a file", "under a file"])
def test_a_backup_dir_setting_that_cannot_be_used(
    head_db: DatabaseConfig, tmp_path: Path, problem: str
) -> None:
    (tmp_path / "a-file").write_text("")
    configured = tmp_path / "a-file" if problem == "a file" else tmp_path / "a-file" / "backups"
    result = run_inv("db.backup", database=head_db, env={"UAIP_BACKUP_DIR": str(configured)})
    assert result.returncode == 2
    line = one_line_error(result, head_db)
    assert f"Backup folder {configured} does not exist" in line and "UAIP_BACKUP_DIR" in line


def test_out_creates_its_folder_owner_only(head_db: DatabaseConfig, tmp_path: Path) -> None:
    target = tmp_path / "new" / "backups"
    result = run_inv("db.backup", "--out", str(target), "--no-verify", database=head_db)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    made = made_path(result)
    assert made.parent == target and manifests.read_manifest(made).state == "not verified"
    assert "not verified (made with --no-verify)" in result.stdout


@pytest.mark.root  # a full disk is a small tmpfs, which only root may mount
@pytest.mark.parametrize("fails_at", ["dump.pgdump", "schema.json", "manifest.json"])
def test_a_full_disk_leaves_no_backup_behind(
    head_db: DatabaseConfig, tmp_path: Path, fails_at: str
) -> None:
    sizes = {entry.path: entry.size for entry in create_backup(head_db, tmp_path).manifest.files}
    room = {
        "dump.pgdump": 4096,
        "schema.json": pages(sizes["dump.pgdump"]),
        "manifest.json": pages(sizes["dump.pgdump"]) + pages(sizes["schema.json"]),
    }[fails_at]
    with small_disk(tmp_path / "disk", room) as disk:
        result = run_inv("db.backup", "--out", str(disk), "--no-verify", database=head_db)
        assert result.returncode == 1
        line = one_line_error(result, head_db)
        assert "No space left on device" in line
        if fails_at != "dump.pgdump":
            assert f"Could not write the backup into {disk}: No space left on device" in line
            assert f"({fails_at})" in line and "nothing was kept" in line
        assert final_folders(disk) == [] and unfinished(disk) == []
        assert "Restore it with" not in result.stdout


# --- db.backup --keep -----------------------------------------------------------------------


def test_keep_never_prunes_the_backup_it_made_nor_an_unreadable_one(
    head_db: DatabaseConfig, tmp_path: Path
) -> None:
    later_clock = create_backup(head_db, tmp_path)
    rewrite_manifest(later_clock.path, created_at="2999-12-31T23:59:59.000000Z")
    unreadable = create_backup(head_db, tmp_path)
    (unreadable.path / "manifest.json").write_text("{")
    env = {"UAIP_BACKUP_DIR": str(tmp_path)}
    result = run_inv("db.backup", "--keep", "1", "--no-verify", database=head_db, env=env)
    assert result.returncode == 0, result.stderr
    made = made_path(result)
    assert made.is_dir() and manifests.check_files(made).state == "not verified"
    assert f"pruned {later_clock.path.name}" in result.stdout
    assert not later_clock.path.exists() and unreadable.path.is_dir()
    assert final_folders(tmp_path) == sorted([made, unreadable.path])


def test_concurrent_keep_one_runs_lose_nothing_unnamed(
    head_db: DatabaseConfig, tmp_path: Path
) -> None:
    env = {"UAIP_BACKUP_DIR": str(tmp_path)}
    runs = [
        start_cli("db.backup", "--keep", "1", "--no-verify", database=head_db, env=env)
        for _ in range(3)
    ]
    results = [(run, *run.communicate(timeout=240)) for run in runs]
    made, pruned = [], set()
    for run, stdout, stderr in results:
        assert run.returncode == 0, stderr
        assert "Traceback" not in stdout + stderr
        path = made_path(subprocess.CompletedProcess([], 0, stdout, stderr))
        own = {line.split()[-1] for line in stdout.splitlines() if "  pruned " in line}
        assert path.name not in own
        made.append(path)
        pruned |= own
    assert len(set(made)) == 3 and unfinished(tmp_path) == []
    remaining = final_folders(tmp_path)
    # Every backup made is still there, or a run said it pruned it; at least the newest stays.
    assert {p.name for p in made} == {p.name for p in remaining} | pruned
    # The newest backup (the third number the folder gave) is never pruned.
    assert 3 in {manifests.read_manifest(p).sequence for p in remaining}


def test_a_killed_backup_leaves_only_an_unfinished_folder_swept_by_the_next_run(
    head_db: DatabaseConfig, tmp_path: Path
) -> None:
    env = {"UAIP_BACKUP_DIR": str(tmp_path)}
    lock = os.open(tmp_path / folders.LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # the run writes its dump, then waits to be named
    try:
        run = start_cli("db.backup", "--no-verify", database=head_db, env=env)
        until(lambda: any((p / "schema.json").is_file() for p in unfinished(tmp_path)))
        kill(run)
    finally:
        os.close(lock)
    assert final_folders(tmp_path) == [] and len(unfinished(tmp_path)) == 1
    leftover = unfinished(tmp_path)[0]
    refused = run_inv("db.restore", str(leftover), database=head_db)
    assert refused.returncode == 2
    assert "is an unfinished backup" in one_line_error(refused, head_db)
    rehearsal = run_inv("db.rehearse", database=head_db, env=env)
    assert rehearsal.returncode == 2 and "run `inv db.backup` first" in rehearsal.stderr

    result = run_inv("db.backup", "--no-verify", database=head_db, env=env)
    assert result.returncode == 0, result.stderr
    assert f"removed {leftover.name}, an unfinished backup whose run was stopped" in result.stdout
    assert unfinished(tmp_path) == [] and final_folders(tmp_path) == [made_path(result)]


# --- the session that holds the dump's snapshot ---------------------------------------------


@contextlib.contextmanager
def pg_dump_held(database: DatabaseConfig) -> Iterator[Callable[[], bool]]:
    """A table outside `public` locked (ACCESS EXCLUSIVE) until the block ends: pg_dump, which
    locks every table it dumps, waits there while the backup's own session (which counts the
    rows of `public` only) sits idle in its snapshot transaction. Yields: is pg_dump waiting."""
    sql(database, "CREATE SCHEMA IF NOT EXISTS held; CREATE TABLE IF NOT EXISTS held.t (x int)")
    with psycopg.connect(**database.connect_kwargs()) as holder:
        holder.execute("SET idle_in_transaction_session_timeout = 0")
        holder.execute("LOCK TABLE held.t IN ACCESS EXCLUSIVE MODE")

        def waiting() -> bool:
            return bool(
                sql(
                    database,
                    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                    "AND query LIKE 'LOCK TABLE %%' AND wait_event_type = 'Lock'",
                )
            )

        yield waiting
        holder.rollback()


def snapshot_session(database: DatabaseConfig) -> int | None:
    """The backup's session once it idles in the transaction whose snapshot pg_dump imported
    (its reads done), named by its application_name so no other session is mistaken for it."""
    rows = sql(
        database,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = %s AND state = 'idle in transaction'",
        (dump.SNAPSHOT_APPLICATION,),
    )
    return int(rows[0][0]) if rows else None


def sessions(database: DatabaseConfig) -> list[tuple[Any, ...]]:
    return sql(
        database,
        "SELECT pid, application_name, state, left(query, 60) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )


def test_an_idle_in_transaction_timeout_does_not_end_the_snapshot_a_backup_holds(
    head_db: DatabaseConfig, tmp_path: Path
) -> None:
    sql(
        head_db,
        psycopg.sql.SQL("ALTER DATABASE {} SET idle_in_transaction_session_timeout = '1s'")
        .format(psycopg.sql.Identifier(head_db.name))
        .as_string(),
    )
    env = {"UAIP_BACKUP_DIR": str(tmp_path)}
    with pg_dump_held(head_db) as waiting:
        run = start_cli("db.backup", "--no-verify", database=head_db, env=env)
        until(waiting)
        time.sleep(2.5)  # the snapshot's session idles past the database's 1 s
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stdout + stderr
    listed = run_inv("db.backups", "--json", database=head_db, env=env)
    assert [b["state"] for b in json.loads(listed.stdout)["backups"]] == ["not verified"]


def test_a_backup_whose_snapshot_session_ends_leaves_nothing_listed(
    head_db: DatabaseConfig, tmp_path: Path
) -> None:
    env = {"UAIP_BACKUP_DIR": str(tmp_path)}
    with pg_dump_held(head_db) as waiting:
        run = start_cli("db.backup", "--no-verify", database=head_db, env=env)
        until(waiting)
        pid = until_found(lambda: snapshot_session(head_db))
        assert sql(head_db, "SELECT pg_terminate_backend(%s, 10000)", (pid,)) == [(True,)]
        seen = sessions(head_db)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 1, f"{stdout}{stderr}sessions after the end of {pid}: {seen}"
    assert "Traceback" not in stderr and head_db.password not in stdout + stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "nothing was kept" in stderr and "Restore it with" not in stdout
    assert final_folders(tmp_path) == [] and unfinished(tmp_path) == []
    listed = run_inv("db.backups", "--json", database=head_db, env=env)
    assert json.loads(listed.stdout)["backups"] == []


# --- db.restore -----------------------------------------------------------------------------


@pytest.fixture
def made(head_db: DatabaseConfig, tmp_path: Path) -> Path:
    return create_backup(head_db, tmp_path / "backups", state=manifests.NOT_VERIFIED).path


@pytest.mark.parametrize(
    ("target", "env"),
    [
        ("template1", {}),
        ("template0", {}),
        ("postgres", {}),
        ("postgres", {"DB_ENV": "production"}),
        ("head template", {}),
    ],
    ids=["template1", "template0", "postgres", "postgres-in-production", "a-template"],
)
def test_system_and_template_databases_are_never_restored_into(
    server: ScratchServer,
    head_db: DatabaseConfig,
    head_template: str,
    made: Path,
    target: str,
    env: dict[str, str],
) -> None:
    name = head_template if target == "head template" else target
    args = ["db.restore", str(made), "--target", name, "--yes", "--confirm-db", name]
    result = run_inv(*args, database=head_db, env=env)
    assert result.returncode == 2
    line = one_line_error(result, head_db)
    assert line.startswith(f"Refusing to restore into the database {name!r}")
    assert "--into-existing" not in line
    if name == "template1":
        assert sql(server.config_for(name), PUBLIC_RELATIONS) == [(0,)]


def test_restoring_into_any_existing_database_needs_yes(
    server: ScratchServer, full_db: DatabaseConfig, empty_db: DatabaseConfig, tmp_path: Path
) -> None:
    made = create_backup(full_db, tmp_path / "backups").path
    args = ["db.restore", str(made), "--target", empty_db.name]
    refused = run_inv(*args, database=full_db)
    assert refused.returncode == 2
    line = one_line_error(refused, full_db)
    assert "run it again with --yes" in line and "--into-existing" not in line
    assert sql(empty_db, PUBLIC_RELATIONS) == [(0,)]

    production = run_inv(*args, "--yes", database=full_db, env={"DB_ENV": "production"})
    assert production.returncode == 2
    assert f"--yes --confirm-db {empty_db.name}" in one_line_error(production, full_db)

    done = run_inv(*args, "--yes", database=full_db)
    assert done.returncode == 0, done.stderr
    assert "the backup is not verified (its restore check did not finish)" in done.stdout
    assert hashes(empty_db) == hashes(full_db)


def test_restore_says_whether_the_backup_was_verified(
    server: ScratchServer, head_db: DatabaseConfig, tmp_path: Path
) -> None:
    env = {"UAIP_BACKUP_DIR": str(tmp_path)}
    assert run_inv("db.backup", database=head_db, env=env).returncode == 0
    verified = final_folders(tmp_path)[0]
    assert manifests.read_manifest(verified).state == "verified"
    name = f"{head_db.name}_copy"
    try:
        result = run_inv("db.restore", str(verified), "--target", name, database=head_db, env=env)
        assert result.returncode == 0, result.stderr
        assert "the backup is verified (restored and checked on a throwaway database)" in (
            result.stdout
        )
    finally:
        server.drop_database(name)


# --- a run killed while it proves its backup restorable ------------------------------------


def test_a_backup_killed_in_its_restore_check_is_labelled_and_its_database_swept(
    server: ScratchServer, full_db: DatabaseConfig, tmp_path: Path
) -> None:
    # The restore check and the rehearsal run on the server the settings name, the way a shared
    # CI server is used, so what a killed run leaves there is seen by the next one.
    env = {"UAIP_BACKUP_DIR": str(tmp_path), "UAIP_TEST_SERVER": "env"}
    admin = server.connection()

    def throwaways() -> set[str]:
        rows = admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'uaip\\_verify\\_%'"
        ).fetchall()
        return {str(row[0]) for row in rows}

    before = throwaways()
    run = start_cli("db.backup", database=full_db, env=env)
    until(lambda: bool(throwaways() - before))
    kill(run)
    left = throwaways() - before
    assert len(left) == 1 and exists(server, next(iter(left)))
    (backup,) = final_folders(tmp_path)
    assert manifests.check_files(backup).state == "written"

    result = run_inv("db.rehearse", database=full_db, env=env)
    assert result.returncode == 0, result.stderr
    assert (
        f"Rehearsing on {backup.name}; the backup is not verified (its restore check did not "
        "finish)."
    ) in result.stdout
    assert f"dropped {next(iter(left))}, a throwaway database a stopped run left behind" in (
        result.stdout
    )
    assert "is not verified (its restore check did not finish)" in result.stdout
    assert throwaways() == before
    assert not any(
        str(row[0]).startswith("uaip_rehearsal_")
        for row in admin.execute("SELECT datname FROM pg_database").fetchall()
    )


def test_rehearse_skips_a_backup_whose_restore_check_failed(
    head_db: DatabaseConfig, tmp_path: Path
) -> None:
    good = create_backup(head_db, tmp_path)
    folders.record_state(good.path, manifests.VERIFIED)
    bad = create_backup(head_db, tmp_path)
    folders.record_state(bad.path, manifests.VERIFY_FAILED)
    result = run_inv("db.rehearse", database=head_db, env={"UAIP_BACKUP_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert f"Rehearsing on {good.path.name}; the backup is verified (restored" in result.stdout
    assert f"The backup used, {good.path.name}, is verified" in result.stdout
    assert manifests.check_files(bad.path).state == "verify failed"


def test_backups_lists_the_folder_newest_first(head_db: DatabaseConfig, tmp_path: Path) -> None:
    import json

    env = {"UAIP_BACKUP_DIR": str(tmp_path)}
    assert run_inv("db.backup", database=head_db, env=env).returncode == 0
    assert run_inv("db.backup", "--no-verify", database=head_db, env=env).returncode == 0
    (tmp_path / ".partial-unfinished").mkdir()
    listed = json.loads(run_inv("db.backups", "--json", env=env).stdout)["backups"]
    assert [row["state"] for row in listed] == ["not verified", "verified"]
    assert {row["database"] for row in listed} == {head_db.name}
    assert all(row["bytes"] > 0 for row in listed)
    text = run_inv("db.backups", env=env)
    assert text.returncode == 0 and "not verified" in text.stdout and ".partial" not in text.stdout


def test_backups_names_the_damaged_backups_it_skips(
    head_db: DatabaseConfig, tmp_path: Path
) -> None:
    import json

    good = create_backup(head_db, tmp_path)
    bad = create_backup(head_db, tmp_path)
    cut_manifest(bad.path)
    unreadable = "its manifest.json cannot be read ("
    text = run_inv("db.backups", "--out", str(tmp_path))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"{good.path}  {head_db.name} at ")
    assert lines[1] == "Skipped 1 damaged backup, which db.restore refuses:"
    assert lines[2].startswith(f"  {bad.path}: {unreadable}")
    listed = json.loads(run_inv("db.backups", "--out", str(tmp_path), "--json").stdout)
    assert [row["path"] for row in listed["backups"]] == [str(good.path)]
    assert [row["path"] for row in listed["damaged"]] == [str(bad.path)]
    assert listed["damaged"][0]["problem"].startswith(unreadable)
    # None left that can be read: the listing says so, and still names them.
    (good.path / "manifest.json").write_text("not json")
    text = run_inv("db.backups", "--out", str(tmp_path))
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith(f"No readable backups in {tmp_path}.\n")
    assert "Skipped 2 damaged backups, which db.restore refuses:" in text.stdout
    assert f"  {good.path}: {unreadable}" in text.stdout


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("--out", "does not exist"),
        ("UAIP_BACKUP_DIR", "does not exist"),
        ("--out", "is a file, not a folder"),
    ],
)
def test_backups_of_a_folder_that_does_not_exist(given: str, problem: str, tmp_path: Path) -> None:
    named = tmp_path / ("nowhere" if problem == "does not exist" else "a-file")
    (tmp_path / "a-file").write_text("")
    args, env = (["--out", str(named)], {}) if given == "--out" else ([], {given: str(named)})
    for as_json in ([], ["--json"]):
        result = run_inv("db.backups", *args, *as_json, env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"Backup folder {named} {problem}; check {given}")
        if as_json:
            assert json.loads(result.stdout) == {"error": lines[0], "exit_code": 2}
        else:
            assert result.stdout == ""


def test_backups_in_a_checkout_that_has_taken_none_yet(tmp_path: Path) -> None:
    # backups/ appears with the first backup: before that, an empty listing, not an error.
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("alembic.ini", "migrations", "database", "tasks.py"):
        (root / name).symlink_to(ROOT / name)
    env = {k: v for k, v in cli_env().items() if k != "UAIP_BACKUP_DIR"}
    env["UAIP_DB_ROOT"] = str(root)
    for as_json, said in (
        ([], "No backups yet: `inv db.backup` writes them into"),
        (["--json"], '"backups": []'),
    ):
        result = subprocess.run(
            [str(BIN / "inv"), "db.backups", *as_json],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0 and result.stderr == "", result.stderr
        assert said in result.stdout
    assert not (root / "backups").exists()


def test_clean_drops_only_leftovers_and_asks_first(
    server: ScratchServer, head_db: DatabaseConfig
) -> None:
    admin = server.connection()
    names = ["uaip_verify_1_dead", "scoping_restored_20260101000000", "keep_me_clean_test"]
    for name in names:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        asked = run_inv("db.clean", database=head_db)
        assert asked.returncode == 2, asked.stdout + asked.stderr
        assert "uaip_verify_1_dead" in asked.stdout and "keep_me_clean_test" not in asked.stdout
        assert "--yes" in asked.stderr
        done = run_inv("db.clean", "--yes", database=head_db)
        assert done.returncode == 0, done.stderr
        left = {row[0] for row in admin.execute("SELECT datname FROM pg_database").fetchall()}
        assert "keep_me_clean_test" in left and head_db.name in left
        assert not {"uaip_verify_1_dead", "scoping_restored_20260101000000"} & left
    finally:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_rehearse_takes_a_backup_of_this_database_on_this_server_only(
    head_db: DatabaseConfig, namesake: DatabaseConfig, tmp_path: Path
) -> None:
    runner.upgrade(namesake, "head")
    env = {"UAIP_BACKUP_DIR": str(tmp_path)}
    create_backup(namesake, tmp_path)  # the only backup of that name, from another server

    refused = run_inv("db.rehearse", database=head_db, env=env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "None of the 1 backup(s) of" in refused.stderr
    assert "is of this database on this server" in refused.stderr

    ours = create_backup(head_db, tmp_path)
    newer_theirs = create_backup(namesake, tmp_path)  # the newest of that name
    result = run_inv("db.rehearse", database=head_db, env=env)
    assert result.returncode == 0, result.stderr
    assert f"Rehearsing on {ours.path.name};" in result.stdout

    # Named explicitly, any backup is rehearsed on.
    named = run_inv("db.rehearse", "--backup", str(newer_theirs.path), database=head_db, env=env)
    assert named.returncode == 0 and f"Rehearsing on {newer_theirs.path.name};" in named.stdout


# --- restored names: 63 bytes, their suffix whole ------------------------------------------


@pytest.mark.parametrize(
    "long_name",
    ["uaip_" + "l" * 55, "uaip_" + "数" * 19],  # 60 characters; 62 bytes in 24 characters
    ids=["60-characters", "multibyte"],
)
def test_two_restores_of_a_long_named_database_go_to_two_new_databases(
    server: ScratchServer, head_template: str, tmp_path: Path, long_name: str
) -> None:
    admin = server.connection()
    admin.execute(
        psycopg.sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            psycopg.sql.Identifier(long_name), psycopg.sql.Identifier(head_template)
        )
    )
    source = server.config_for(long_name)
    restored = "SELECT datname FROM pg_database WHERE datname LIKE '%\\_restored\\_%'"
    try:
        made = create_backup(source, tmp_path / "backups").path
        runs = [run_inv("db.restore", str(made), database=source) for _ in range(2)]
        for run in runs:
            assert run.returncode == 0, run.stdout + run.stderr
            assert "--yes" not in run.stdout + run.stderr
        names = {row[0] for row in admin.execute(restored).fetchall()}
        assert len(names) == 2, names
        for name in names:
            assert len(name.encode()) <= 63 and name in runs[0].stdout + runs[1].stdout
            assert re.search(r"_restored_\d{14}(_\d+)?$", name), name
            assert hashes(server.config_for(name)) == hashes(source)
        cleaned = run_inv("db.clean", "--yes", database=source)
        assert cleaned.returncode == 0, cleaned.stderr
        assert all(name in cleaned.stdout for name in names)
        assert not {row[0] for row in admin.execute(restored).fetchall()} & names
    finally:
        for (name,) in admin.execute(restored).fetchall():
            server.drop_database(name)
        server.drop_database(long_name)


@contextlib.contextmanager
def role_that_cannot_read(
    server: ScratchServer, database: DatabaseConfig, *unreadable: str
) -> Iterator[DatabaseConfig]:
    """A second role that may read every table of `database` but `unreadable` (made by the
    superuser, every privilege revoked from that role), as settings for `database`."""
    with limited_role(server) as role:
        name = f'"{role.user}"'
        sql(database, f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {name}")
        sql(database, f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {name}")
        for table in unreadable:
            sql(database, f"CREATE TABLE public.{table} (id int)")
            sql(database, f"REVOKE ALL ON public.{table} FROM {name}")
        try:
            yield role.with_database(database.name)
        finally:
            sql(database, f"DROP OWNED BY {name}")


def test_a_table_the_role_may_not_read_is_named_before_pg_dump_starts(
    server: ScratchServer, head_db: DatabaseConfig, backups: Path
) -> None:
    """Issue 24 item 24: it was a bare "permission denied for table payroll"."""
    unreadable = [f"payroll_{n}" for n in range(5)]
    with role_that_cannot_read(server, head_db, *unreadable) as role:
        result = run_inv("db.backup", database=role)
    assert result.returncode == 2, result.stdout + result.stderr
    line = one_line_error(result, role)
    assert "public.payroll_0, public.payroll_1, public.payroll_2 and 2 more" in line, line
    assert "GRANT SELECT ON public.payroll_0, public.payroll_1, public.payroll_2 TO " in line
    assert not backups.exists() or not any(backups.iterdir())


def test_a_production_upgrade_names_the_table_its_backup_may_not_read(
    server: ScratchServer, empty_db: DatabaseConfig
) -> None:
    previous = history.load().order[-2].revision
    runner.upgrade(empty_db, previous)
    with role_that_cannot_read(server, empty_db, "payroll") as role:
        result = run_inv("db.upgrade", database=role, env={"DB_ENV": "production"})
    assert result.returncode == 2, result.stdout + result.stderr
    line = one_line_error(result, role)
    assert "may not read 1 table(s) a backup holds: public.payroll;" in line, line
    assert "GRANT SELECT ON public.payroll TO " in line, line
    assert applied.current_revisions(empty_db) == (previous,)
