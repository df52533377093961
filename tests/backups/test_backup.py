"""Backups are proven restorable: round trips keep every row, damage and conflicts are refused."""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import sql
from uaip_db import files, process
from uaip_db.backups import backup
from uaip_db.backups.backup import Backup, create_backup, restore_backup
from uaip_db.catalog.snapshot import Snapshot, take
from uaip_db.checks import sample_data
from uaip_db.errors import BackupError, CheckFailed, SettingsError, UaipDbError
from uaip_db.migrations import runner
from uaip_db.migrations.baseline import BASELINE_TABLES
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig

SESSIONS = 2000
FILL_SQL = f"""
INSERT INTO sessions (user_id, project_name, current_stage, status, metadata, email)
SELECT 'user-' || i, 'Grüße 数据 ✓ project ' || i, 1 + i % 5,
       (ARRAY['in_progress', 'completed', 'abandoned'])[1 + i % 3],
       jsonb_build_object('n', i, 'label', 'Grüße 数据 ✓',
                          'nested', jsonb_build_object('tags', jsonb_build_array('ä', '数', i),
                                                       'deep', jsonb_build_object('ok', i % 2 = 0,
                                                                                  'none', NULL))),
       CASE WHEN i % 7 = 0 THEN NULL ELSE 'u' || i || '@example.org' END
FROM generate_series(1, {SESSIONS}) AS i;

INSERT INTO stage_data (session_id, stage_number, field_name, field_value)
SELECT s.session_id, st, 'field_' || st,
       jsonb_build_object('answer', 'Antwort ' || st || ' ✓', 'list', jsonb_build_array(st, 'x'))
FROM sessions AS s, generate_series(1, 2) AS st;

INSERT INTO conversation_history (session_id, stage_number, role, content, metadata)
SELECT s.session_id, 1 + k % 5, (ARRAY['user', 'assistant', 'system'])[1 + k % 3],
       'Nachricht ' || k || E' — 数据\\nzweite Zeile', jsonb_build_object('k', k)
FROM sessions AS s, generate_series(1, 3) AS k;

INSERT INTO checkpoints (session_id, stage_number, checkpoint_data)
SELECT session_id, current_stage, jsonb_build_object('state', metadata)
FROM sessions;

INSERT INTO project_charters (session_id, charter_data, governance_decision, feasibility_level)
SELECT session_id, jsonb_build_object('title', project_name, 'scope', jsonb_build_array('a', 'b')),
       (ARRAY['proceed', 'revise', 'halt', 'submit_to_committee'])[1 + current_stage % 4],
       (ARRAY['low', 'medium', 'high'])[1 + current_stage % 3]
FROM sessions WHERE status = 'completed' OR current_stage > 3;

INSERT INTO quality_metrics (session_id, stage_number, field_name, quality_score, issues)
SELECT s.session_id, q, 'field_' || q, (q * 3) % 11, jsonb_build_array('Problem ✗ ' || q)
FROM sessions AS s, generate_series(1, 2) AS q;

INSERT INTO consistency_reports (session_id, is_consistent, overall_feasibility, contradictions)
SELECT session_id, current_stage % 2 = 0, 'medium',
       jsonb_build_array(jsonb_build_object('between', jsonb_build_array(1, 2)))
FROM sessions;
"""


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def full_template(server: ScratchServer, head_template: str) -> str:
    """A database at head with thousands of rows in every table, cloned per test."""
    database = server.create_database("uaip_tpl_full", template=head_template)
    sql(database, FILL_SQL)
    sql(database, "ANALYZE")
    server.mark_template(database.name)
    return database.name


@pytest.fixture
def full_db(server: ScratchServer, full_template: str) -> Iterator[DatabaseConfig]:
    database = server.create_database(template=full_template)
    yield database
    server.drop_database(database.name)


@pytest.fixture
def new_target(server: ScratchServer) -> Iterator[DatabaseConfig]:
    """A database name on the server that does not exist yet (dropped after the test)."""
    name = f"uaip_restored_{os.urandom(4).hex()}"
    yield server.config_for(name)
    server.drop_database(name)


@pytest.fixture
def backups(tmp_path: Path) -> Path:
    return tmp_path / "backups"


def hashes(database: DatabaseConfig) -> dict[str, tuple[int, str]]:
    with psycopg.connect(**database.connect_kwargs(), autocommit=True) as conn:
        return sample_data.table_hashes(conn)


def exists(server: ScratchServer, name: str) -> bool:
    row = (
        server.connection()
        .execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
        .fetchone()
    )
    return row is not None and row[0] == 1


def tamper(path: Path, how: Callable[[bytes], bytes]) -> None:
    path.write_bytes(how(path.read_bytes()))


def flip_one_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


def take_snapshot(folder: Path) -> Snapshot:
    return Snapshot.from_json((folder / "schema.json").read_text())


def rewrite_manifest(folder: Path, **changes: object) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# --- round trips ----------------------------------------------------------------------------


def test_backup_drop_restore_keeps_every_row(
    server: ScratchServer, full_db: DatabaseConfig, backups: Path
) -> None:
    before = hashes(full_db)
    fingerprint = take(full_db).digest()
    assert set(BASELINE_TABLES) <= set(before)
    assert all(
        before[table][0] >= SESSIONS for table in BASELINE_TABLES if table != "project_charters"
    )

    started = time.monotonic()
    made = create_backup(full_db, backups)
    dumped = time.monotonic() - started
    server.drop_database(full_db.name)
    report = restore_backup(made.path, full_db)

    assert report.verified and report.created
    assert hashes(full_db) == before
    assert made.manifest.fingerprint == fingerprint
    assert take(full_db) == take_snapshot(made.path)
    assert runner.current_revisions(full_db) == made.manifest.revisions == runner.head_revisions()
    assert report.tables == len(made.manifest.row_counts)
    assert report.rows == sum(made.manifest.row_counts.values()) > 20 * SESSIONS // 2
    assert report.target == full_db.display_url()
    assert made.manifest.row_counts["alembic_version"] == 1
    print(f"\nbackup {dumped:.2f} s, restore {report.seconds:.2f} s, {report.rows} rows")


def test_parallel_directory_backup_round_trips(
    full_db: DatabaseConfig, new_target: DatabaseConfig, backups: Path
) -> None:
    made = create_backup(full_db, backups, jobs=2)
    assert made.manifest.format == "directory" and made.manifest.jobs == 2
    assert (made.path / "dump" / "toc.dat").is_file()
    assert not (made.path / "dump.pgdump").exists()
    assert len(made.manifest.files) > 7
    report = restore_backup(made.path, new_target, jobs=2)
    assert report.verified
    assert hashes(new_target) == hashes(full_db)


def test_compression_is_chosen_and_recorded(
    server: ScratchServer, full_db: DatabaseConfig, backups: Path
) -> None:
    made = create_backup(full_db, backups, jobs=2, compression=1)
    assert made.manifest.compression == 1
    assert backup.read_manifest(made.path).compression == 1
    assert backup.verify_restorable(made, server, jobs=2).verified
    with pytest.raises(SettingsError, match="0 to 9"):
        create_backup(full_db, backups, compression=12)


def test_a_backup_is_proven_restorable_on_a_scratch_server(
    server: ScratchServer, full_db: DatabaseConfig, backups: Path
) -> None:
    made = create_backup(full_db, backups)
    databases_before = {
        r[0] for r in server.connection().execute("SELECT datname FROM pg_database").fetchall()
    }
    report = backup.verify_restorable(made, server)
    assert report.verified and report.rows == sum(made.manifest.row_counts.values())
    databases_after = {
        r[0] for r in server.connection().execute("SELECT datname FROM pg_database").fetchall()
    }
    assert databases_after == databases_before


def test_manifest_describes_the_backup(full_db: DatabaseConfig, backups: Path) -> None:
    made = create_backup(full_db, backups)
    manifest = backup.read_manifest(made.path / "manifest.json")
    assert manifest == made.manifest == backup.check_files(made.path)
    assert re.fullmatch(
        rf"{full_db.name}-\d{{8}}T\d{{6}}Z-{runner.head_revisions()[0]}", made.path.name
    )
    assert made.path.parent == backups
    assert [entry.path for entry in manifest.files] == ["dump.pgdump", "schema.json"]
    assert manifest.files[0].size == (made.path / "dump.pgdump").stat().st_size
    assert (
        manifest.server_version.split()[0] == sql(full_db, "SHOW server_version")[0][0].split()[0]
    )
    assert re.fullmatch(r"\d+(\.\d+)*\S*", manifest.pg_dump_version)
    assert manifest.source == full_db.display_url()
    assert manifest.created_at.endswith("Z")
    assert "table sessions" in manifest.objects and "extension uuid-ossp" in manifest.objects
    data = json.loads((made.path / "manifest.json").read_text())
    assert data["format_version"] == 1 and data["database"] == full_db.name
    assert data["compression"] is None and data["jobs"] == 1 and data["format"] == "custom"
    assert made.restore_command() == f"inv db.restore {made.path}"


def test_backups_of_the_same_second_get_their_own_folder(
    head_db: DatabaseConfig, backups: Path
) -> None:
    first = create_backup(head_db, backups)
    second = create_backup(head_db, backups)
    assert first.path != second.path
    assert backup.list_backups(backups, head_db.name) == [second.path, first.path]


def test_files_are_owner_only_and_hold_no_password(full_db: DatabaseConfig, backups: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        made = create_backup(full_db, backups, jobs=2)
    finally:
        os.umask(old_umask)
    assert full_db.password
    for path in [made.path, *made.path.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path
        if path.is_file():
            assert full_db.password.encode() not in path.read_bytes(), path
    assert "***" in (made.path / "manifest.json").read_text()


# --- damage is refused before anything happens ----------------------------------------------


@pytest.mark.parametrize(
    ("how", "named"),
    [
        (flip_one_byte, "sha256"),
        (lambda data: data[: len(data) - 100], "size"),
    ],
    ids=["one-byte-changed", "truncated"],
)
def test_a_damaged_dump_is_refused_before_the_target_is_touched(
    server: ScratchServer,
    full_db: DatabaseConfig,
    new_target: DatabaseConfig,
    backups: Path,
    how: Callable[[bytes], bytes],
    named: str,
) -> None:
    made = create_backup(full_db, backups)
    tamper(made.path / "dump.pgdump", how)
    with pytest.raises(CheckFailed) as refused:
        restore_backup(made.path, new_target)
    message = str(refused.value)
    assert f"Backup {made.path} is damaged: dump.pgdump does not match its manifest" in message
    assert f"({named} " in message and message.endswith("Use another backup.")
    assert not exists(server, new_target.name)

    before = hashes(full_db)
    with pytest.raises(CheckFailed, match="is damaged"):
        restore_backup(made.path, full_db, into_existing=True)
    assert hashes(full_db) == before


def test_a_damaged_directory_dump_and_added_files_are_refused(
    full_db: DatabaseConfig, backups: Path
) -> None:
    made = create_backup(full_db, backups, jobs=2)
    data_file = max((made.path / "dump").glob("*.dat.gz"), key=lambda p: p.stat().st_size)
    tamper(data_file, flip_one_byte)
    with pytest.raises(CheckFailed, match=rf"dump/{data_file.name} does not match"):
        backup.check_files(made.path)
    tamper(data_file, flip_one_byte)  # undone
    backup.check_files(made.path)
    (made.path / "dump" / "extra.dat").write_bytes(b"x")
    with pytest.raises(CheckFailed, match=r"dump/extra.dat is not in its manifest"):
        backup.check_files(made.path)
    (made.path / "dump" / "extra.dat").unlink()
    data_file.unlink()
    with pytest.raises(CheckFailed, match=rf"dump/{data_file.name} is missing"):
        backup.check_files(made.path)


def test_missing_or_unreadable_backups(tmp_path: Path, new_target: DatabaseConfig) -> None:
    with pytest.raises(SettingsError, match=r"^No backup at .*nothing-here"):
        restore_backup(tmp_path / "nothing-here", new_target)
    (tmp_path / "no-manifest").mkdir()
    with pytest.raises(SettingsError, match=r"has no manifest.json"):
        backup.check_files(tmp_path / "no-manifest")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text('{"format_version": 1}')
    with pytest.raises(CheckFailed, match=r"manifest.json cannot be read"):
        backup.read_manifest(tmp_path / "bad")


def test_manifest_entries_cannot_point_outside_the_backup(
    head_db: DatabaseConfig, backups: Path
) -> None:
    made = create_backup(head_db, backups)
    entry = {"path": "../../etc/passwd", "size": 1, "sha256": "0" * 64}
    rewrite_manifest(made.path, files=[entry])
    with pytest.raises(CheckFailed, match="points outside the backup"):
        backup.check_files(made.path)


# --- existing targets -----------------------------------------------------------------------


def test_an_occupied_target_is_refused_unless_asked_to_replace_it(
    full_db: DatabaseConfig, head_db: DatabaseConfig, backups: Path
) -> None:
    made = create_backup(full_db, backups)
    with psycopg.connect(**head_db.connect_kwargs(), autocommit=True) as conn:
        sample_data.fill(conn)
    before = hashes(head_db)
    with pytest.raises(CheckFailed, match=r"already exists and holds .* --into-existing"):
        restore_backup(made.path, head_db)
    assert hashes(head_db) == before

    report = restore_backup(made.path, head_db, into_existing=True)
    assert report.verified and not report.created
    assert hashes(head_db) == hashes(full_db)

    with pytest.raises(SettingsError, match="jobs=1"):
        restore_backup(made.path, head_db, into_existing=True, jobs=2)


def test_an_existing_empty_target_is_restored_into(
    full_db: DatabaseConfig, empty_db: DatabaseConfig, backups: Path
) -> None:
    made = create_backup(full_db, backups)
    report = restore_backup(made.path, empty_db)
    assert report.verified and not report.created
    assert hashes(empty_db) == hashes(full_db)


def test_a_failure_midway_leaves_an_existing_target_as_it_was(
    full_db: DatabaseConfig, head_db: DatabaseConfig, backups: Path
) -> None:
    made = create_backup(full_db, backups)
    with psycopg.connect(**head_db.connect_kwargs(), autocommit=True) as conn:
        sample_data.fill(conn)
        # Outside public, so the leftover check passes; it makes pg_restore's DROP TABLE fail.
        conn.execute("CREATE SCHEMA side")
        conn.execute("CREATE VIEW side.recent AS SELECT session_id FROM public.sessions")
    before, fingerprint = hashes(head_db), take(head_db).digest()
    with pytest.raises(BackupError) as failed:
        restore_backup(made.path, head_db, into_existing=True)
    message = str(failed.value)
    assert "cannot drop table public.sessions because other objects depend on it" in message
    assert message.splitlines()[1] == "The database is as it was; fix the cause and restore again."
    assert len(message.splitlines()) == 2 and head_db.password not in message
    assert hashes(head_db) == before
    assert take(head_db).digest() == fingerprint
    assert sql(head_db, "SELECT count(*) FROM side.recent") == [(sample_data.ROWS_PER_TABLE,)]


def test_objects_only_the_target_has_are_refused_before_replacing(
    full_db: DatabaseConfig, head_db: DatabaseConfig, backups: Path
) -> None:
    made = create_backup(full_db, backups)
    sql(head_db, "CREATE TABLE notes (id int)")
    sql(head_db, "CREATE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 42'")
    before = hashes(head_db)
    with pytest.raises(CheckFailed, match=r"function answer\(\), table notes\)"):
        restore_backup(made.path, head_db, into_existing=True)
    assert hashes(head_db) == before


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"fingerprint": "0" * 64}, "schema.json does not match the manifest's schema fingerprint"),
        ({"revisions": ["03033cebb647"]}, "revision {head}, expected 03033cebb647"),
        ("row_counts", "table sessions: 2000 rows, expected 1999"),
        ("schema", "schema fingerprint differs: table ghost: missing"),
    ],
    ids=["fingerprint", "revision", "row-count", "consistent-schema-lie"],
)
def test_a_restore_that_does_not_match_its_manifest_is_undone(
    server: ScratchServer,
    full_db: DatabaseConfig,
    new_target: DatabaseConfig,
    backups: Path,
    change: object,
    named: str,
) -> None:
    made = create_backup(full_db, backups)
    if change == "row_counts":
        counts = dict(made.manifest.row_counts, sessions=SESSIONS - 1)
        rewrite_manifest(made.path, row_counts=counts)
    elif change == "schema":  # schema.json, its sha256 and the fingerprint all tell one story
        lie = take_snapshot(made.path)
        lie.objects["table ghost"] = {"kind": "table"}
        (made.path / "schema.json").write_text(lie.to_json())
        entries = [vars(e) for e in made.manifest.files if e.path != "schema.json"]
        entries.append(
            {
                "path": "schema.json",
                "size": (made.path / "schema.json").stat().st_size,
                "sha256": files.sha256_of(made.path / "schema.json"),
            }
        )
        rewrite_manifest(made.path, fingerprint=lie.digest(), files=entries)
    else:
        assert isinstance(change, dict)
        rewrite_manifest(made.path, **change)
    with pytest.raises(CheckFailed) as refused:
        restore_backup(made.path, new_target)
    assert named.format(head=runner.head_revisions()[0]) in str(refused.value)
    assert not exists(server, new_target.name)


def test_a_restored_database_backs_up_and_restores_exactly(
    server: ScratchServer, full_db: DatabaseConfig, new_target: DatabaseConfig, backups: Path
) -> None:
    first = restore_backup(create_backup(full_db, backups).path, new_target)
    assert first.verified
    again = backup.verify_restorable(create_backup(new_target, backups), server)
    assert again.verified
    assert take(new_target) == take(full_db)


# --- the tools, their errors and the password -----------------------------------------------


def test_no_password_in_errors(full_db: DatabaseConfig, backups: Path) -> None:
    wrong = DatabaseConfig(
        host=full_db.host,
        port=full_db.port,
        name=full_db.name,
        user=full_db.user,
        password="wrong-" + full_db.password,
    )
    with pytest.raises(UaipDbError) as refused:
        create_backup(wrong, backups)
    assert wrong.password not in str(refused.value) and "password" in str(refused.value)
    assert backup.list_backups(backups, full_db.name) == []

    output = (
        f"pg_restore: error: connection to postgresql://u:{full_db.password}@h/db failed\n"
        f"pg_restore: detail: password {full_db.password}\n"
    )
    error = process.tool_error(output, [full_db], what="restore")
    assert full_db.password not in str(error)
    assert str(error).startswith("Could not restore: pg_restore: error: connection to")


def test_an_old_pg_dump_gets_a_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, head_db: DatabaseConfig, backups: Path
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "pg_dump"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then echo "pg_dump (PostgreSQL) 9.6.24"; exit 0; fi\n'
        "echo 'pg_dump: error: aborting because of server version mismatch' >&2\n"
        "echo 'pg_dump: detail: server version: 15.5; pg_dump version: 9.6.24' >&2\n"
        "exit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(backup, "find_bindir", lambda: bindir)
    with pytest.raises(SettingsError) as refused:
        create_backup(head_db, backups)
    message = str(refused.value)
    assert "pg_dump 9.6.24 is older than the server (15.5)" in message
    assert "PG_BINDIR" in message
    assert list(backups.iterdir()) == []


def test_jobs_must_be_positive(head_db: DatabaseConfig, backups: Path) -> None:
    with pytest.raises(SettingsError, match="1 or more"):
        create_backup(head_db, backups, jobs=0)


def test_a_role_that_is_not_a_superuser_can_back_up_and_restore(
    server: ScratchServer, full_db: DatabaseConfig, backups: Path
) -> None:
    role, password = f"uaip_owner_{os.urandom(3).hex()}", "s3cret p@ss:'%"
    admin = server.connection()
    admin.execute(
        psycopg.sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
            psycopg.sql.Identifier(role), psycopg.sql.Literal(password)
        )
    )
    owner = DatabaseConfig(
        host=full_db.host, port=full_db.port, name=f"{role}_db", user=role, password=password
    )
    try:
        made = create_backup(full_db, backups)
        report = restore_backup(made.path, owner)
        assert report.verified
        assert sql(
            owner,
            "SELECT current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
        ) == [(role, False)]
        assert hashes(owner) == hashes(full_db)
    finally:
        server.drop_database(owner.name)
        admin.execute(
            psycopg.sql.SQL("DROP ROLE IF EXISTS {}").format(psycopg.sql.Identifier(role))
        )


# --- keeping backups ------------------------------------------------------------------------


def test_prune_keeps_the_newest(
    head_db: DatabaseConfig, empty_db: DatabaseConfig, backups: Path
) -> None:
    made = [create_backup(head_db, backups) for _ in range(4)]
    other = create_backup(empty_db, backups)
    (backups / "not-a-backup").mkdir()
    (backups / "half-written").mkdir()
    (backups / "half-written" / "dump.pgdump").write_bytes(b"")
    newest_first = [m.path for m in reversed(made)]
    assert backup.list_backups(backups, head_db.name) == newest_first
    assert other.path.name.endswith("-base")

    removed = backup.prune(backups, head_db.name, keep=2)
    assert removed == newest_first[2:]
    assert backup.list_backups(backups, head_db.name) == newest_first[:2]
    assert backup.list_backups(backups, empty_db.name) == [other.path]
    assert (backups / "not-a-backup").is_dir() and (backups / "half-written").is_dir()
    with pytest.raises(SettingsError):
        backup.prune(backups, head_db.name, keep=0)


def test_a_backup_object_restores_through_its_own_command(
    head_db: DatabaseConfig, backups: Path
) -> None:
    made = create_backup(head_db, backups)
    assert isinstance(made, Backup)
    assert made.restore_command().split() == ["inv", "db.restore", str(made.path)]


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failed_restore_drops_the_database_it_created(
    server: ScratchServer,
    full_db: DatabaseConfig,
    new_target: DatabaseConfig,
    backups: Path,
    jobs: int,
) -> None:
    role = f"uaip_reader_{os.urandom(3).hex()}"
    sql(full_db, f'CREATE ROLE "{role}"; GRANT SELECT ON sessions TO "{role}"')
    made = create_backup(full_db, backups, jobs=jobs)
    sql(full_db, f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')
    with pytest.raises(BackupError) as failed:
        restore_backup(made.path, new_target, jobs=jobs)
    assert f'role "{role}" does not exist' in str(failed.value)
    assert "The new database is dropped again" in str(failed.value)
    assert not exists(server, new_target.name)
