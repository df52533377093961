"""Restores are verified: damage and conflicts are refused, a failure leaves nothing behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.backups.conftest import (
    exists,
    flip_one_byte,
    hashes,
    one_row_fewer,
    rewrite_manifest,
    take_snapshot,
    tamper,
)
from tests.catalog.changes import apply_changes
from tests.conftest import HEAD, run_inv, small_disk, sql
from uaip_db import files
from uaip_db.backups import manifest as manifests
from uaip_db.backups import restore as restoring
from uaip_db.backups.dump import create_backup
from uaip_db.backups.restore import restore_backup
from uaip_db.catalog.snapshot import diff, take
from uaip_db.checks import sample_data
from uaip_db.errors import BackupError, CheckFailed, DiskFull, SettingsError, UsageError
from uaip_db.migrations import history, runner
from uaip_db.servers import scratch
from uaip_db.servers.scratch import ScratchPlace, ScratchServer, start_scratch_server
from uaip_db.settings import DatabaseConfig


def test_a_backup_is_proven_restorable_on_a_scratch_server(
    server: ScratchServer, full_db: DatabaseConfig, backups: Path
) -> None:
    made = create_backup(full_db, backups)
    databases_before = {
        r[0] for r in server.connection().execute("SELECT datname FROM pg_database").fetchall()
    }
    report = restoring.verify_restorable(made, server)
    assert report.verified and report.rows == sum(made.manifest.row_counts.values())
    databases_after = {
        r[0] for r in server.connection().execute("SELECT datname FROM pg_database").fetchall()
    }
    assert databases_after == databases_before


def test_a_restored_database_backs_up_and_restores_exactly(
    server: ScratchServer, full_db: DatabaseConfig, new_target: DatabaseConfig, backups: Path
) -> None:
    first = restore_backup(create_backup(full_db, backups).path, new_target)
    assert first.verified
    again = restoring.verify_restorable(create_backup(new_target, backups), server)
    assert again.verified
    assert take(new_target) == take(full_db)


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


def test_an_occupied_target_is_refused_unless_asked_to_replace_it(
    full_db: DatabaseConfig, head_db: DatabaseConfig, backups: Path
) -> None:
    made = create_backup(full_db, backups)
    with psycopg.connect(**head_db.connect_kwargs(), autocommit=True) as conn:
        sample_data.fill(conn)
    before = hashes(head_db)
    with pytest.raises(CheckFailed, match=r"already exists and holds .* --yes") as refused:
        restore_backup(made.path, head_db)
    assert "--into-existing" not in str(refused.value)  # no such flag
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


def test_types_and_public_grants_only_the_target_has_are_refused_before_replacing(
    full_db: DatabaseConfig, head_db: DatabaseConfig, backups: Path
) -> None:
    made = create_backup(full_db, backups)
    sql(head_db, "CREATE DOMAIN stage AS integer; GRANT CREATE ON SCHEMA public TO PUBLIC")
    before = hashes(head_db)
    with pytest.raises(CheckFailed, match=r"domain stage, schema public\)"):
        restore_backup(made.path, head_db, into_existing=True)
    assert hashes(head_db) == before


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"fingerprint": "0" * 64}, "schema.json does not match the manifest's schema fingerprint"),
        ({"revisions": ["03033cebb647"]}, "revision {head}, expected 03033cebb647"),
        ("row_counts", "table {table}: {rows} rows, expected {fewer}"),
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
    facts = {"head": history.load().heads[0]}
    if change == "row_counts":
        table, counts = one_row_fewer(made.manifest.row_counts)
        rewrite_manifest(made.path, row_counts=counts)
        facts.update(table=table, rows=str(counts[table] + 1), fewer=str(counts[table]))
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
    assert named.format(**facts) in str(refused.value)
    assert not exists(server, new_target.name)


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


# --- restores make no difference that is not there: a changed schema keeps its fingerprint ---


def test_a_restored_copy_of_a_changed_schema_has_its_fingerprint(
    head_db: DatabaseConfig, reader: str, new_target: DatabaseConfig, backups: Path
) -> None:
    apply_changes(head_db, reader, portable_only=False)
    made = create_backup(head_db, backups)

    report = restore_backup(made.path, new_target)  # compares the schema with the backup's

    assert report.verified
    assert diff(take(head_db), take(new_target)) == []


def test_restored_by_another_role_a_changed_schema_keeps_its_fingerprint(
    head_db: DatabaseConfig, reader: str, other_owner: DatabaseConfig, backups: Path
) -> None:
    apply_changes(head_db, reader, portable_only=True)
    made = create_backup(head_db, backups)

    report = restore_backup(made.path, other_owner)

    assert report.verified
    assert sql(other_owner, "SELECT tableowner FROM pg_tables WHERE tablename = 'sessions'") == [
        (other_owner.user,)
    ]
    assert diff(take(head_db), take(other_owner)) == []


def test_restored_by_another_role_an_untouched_database_verifies(
    head_db: DatabaseConfig, other_owner: DatabaseConfig, backups: Path
) -> None:
    restore_backup(create_backup(head_db, backups).path, other_owner)

    result = run_inv("db.verify", database=other_owner)

    assert result.returncode == 0, result.stderr
    assert f"matches revision {HEAD}" in result.stdout


def test_proving_a_backup_restorable_records_the_outcome(
    server: ScratchServer, full_db: DatabaseConfig, backups: Path
) -> None:
    good = create_backup(full_db, backups)
    assert good.manifest.state == "written"
    report = restoring.verify_restorable(good, server)
    assert report.verified and report.backup_state == "verified"
    assert manifests.check_files(good.path).state == "verified"

    bad = create_backup(full_db, backups)
    rewrite_manifest(bad.path, row_counts=one_row_fewer(bad.manifest.row_counts)[1])
    with pytest.raises(CheckFailed, match="does not match its manifest"):
        restoring.verify_restorable(bad, server)
    assert manifests.read_manifest(bad.path).state == "verify failed"


def test_system_and_template_databases_are_never_restored_into(
    server: ScratchServer, full_db: DatabaseConfig, head_template: str, backups: Path
) -> None:
    made = create_backup(full_db, backups)
    for name in ("postgres", "template0", "template1", head_template):
        for into_existing in (False, True):
            with pytest.raises(UsageError, match=r"^Refusing to restore into the database") as no:
                restore_backup(made.path, server.config_for(name), into_existing=into_existing)
            assert "--into-existing" not in str(no.value) and "\n" not in str(no.value)
    assert sql(server.config_for("template1"), "SELECT to_regclass('public.sessions')") == [(None,)]


def test_a_restore_keeps_the_source_encoding_and_collation(
    server: ScratchServer, new_target: DatabaseConfig, backups: Path
) -> None:
    source = server.config_for(f"uaip_latin1_{os.urandom(4).hex()}")
    server.connection().execute(
        f"CREATE DATABASE \"{source.name}\" TEMPLATE template0 ENCODING 'LATIN1' "
        "LC_COLLATE 'C' LC_CTYPE 'C'"
    )
    try:
        runner.upgrade(source, "head")
        made = create_backup(source, backups)
        assert (made.manifest.encoding, made.manifest.collate) == ("LATIN1", "C")
        restore_backup(made.path, new_target)
        assert sql(
            new_target,
            "SELECT pg_encoding_to_char(encoding), datcollate FROM pg_database "
            "WHERE datname = current_database()",
        ) == [("LATIN1", "C")]
    finally:
        server.drop_database(source.name)


def test_a_sql_ascii_database_is_refused_in_one_line(server: ScratchServer, backups: Path) -> None:
    source = server.config_for(f"uaip_ascii_{os.urandom(4).hex()}")
    server.connection().execute(
        f"CREATE DATABASE \"{source.name}\" TEMPLATE template0 ENCODING 'SQL_ASCII' "
        "LC_COLLATE 'C' LC_CTYPE 'C'"
    )
    try:
        for task in (["db.upgrade"], ["db.check"], ["db.backup", "--out", str(backups)]):
            result = run_inv(*task, database=source)
            assert result.returncode == 1, (task, result.stdout, result.stderr)
            assert "uses the SQL_ASCII encoding" in result.stderr
            assert "Traceback" not in result.stderr
    finally:
        server.drop_database(source.name)


def test_db_restore_and_db_rehearse_hash_each_file_once(
    server: ScratchServer,
    full_db: DatabaseConfig,
    new_target: DatabaseConfig,
    backups: Path,
    use_db: Callable[[DatabaseConfig], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from uaip_db.backups.rehearse import rehearse
    from uaip_db.cli import backups as cli_backups

    made = create_backup(full_db, backups)
    hashed: list[str] = []

    def counting(path: str | Path) -> str:
        hashed.append(Path(path).name)
        return files.sha256_of(path)

    monkeypatch.setattr(manifests, "sha256_of", counting)
    use_db(full_db)
    cli_backups.restore(str(made.path), target=new_target.name, out=lambda line: None)
    assert sorted(hashed) == sorted(entry.path for entry in made.manifest.files)
    hashed.clear()
    rehearse(made.path, server)
    assert sorted(hashed) == sorted(entry.path for entry in made.manifest.files)


def test_way_a_restores_the_backup_over_a_release_that_added_objects(
    server: ScratchServer, head_db: DatabaseConfig, backups: Path, checkout: Path
) -> None:
    """The release report's way back A, `inv db.restore BACKUP --target NAME --yes`, after a
    release that added a table, a type and a sequence: what the release made is dropped with the
    restore, in one transaction, and the database is the backup again."""
    from tests.conftest import write_revision
    from uaip_db.migrations import applied, snapshots

    write_revision(
        checkout / "migrations" / "versions",
        "a0a0a0000001",
        HEAD,
        [
            "CREATE TYPE zz_mood AS ENUM ('calm', 'busy')",
            "CREATE SEQUENCE zz_tickets",
            "CREATE TABLE zz_users (id serial PRIMARY KEY, mood zz_mood)",
            "COMMENT ON TABLE zz_users IS 'users'",
            "COMMENT ON COLUMN zz_users.id IS 'id'",
            "COMMENT ON COLUMN zz_users.mood IS 'mood'",
        ],
        ["DROP TABLE zz_users", "DROP SEQUENCE zz_tickets", "DROP TYPE zz_mood"],
        doc="Users",
    )
    snapshots.write(snapshots.build(server))
    sql(head_db, "INSERT INTO sessions (user_id) VALUES ('before the release')")
    made = create_backup(head_db, backups)
    runner.upgrade(head_db, "head")
    sql(head_db, "INSERT INTO zz_users (mood) VALUES ('busy')")
    sql(head_db, "INSERT INTO sessions (user_id) VALUES ('after the release')")
    env = {"UAIP_DB_ROOT": str(checkout)}
    back = run_inv(
        "db.restore",
        str(made.path),
        "--target",
        head_db.name,
        "--yes",
        database=head_db,
        env=env,
    )
    assert back.returncode == 0, back.stdout + back.stderr
    assert applied.current_revisions(head_db) == (HEAD,)
    assert sql(head_db, "SELECT to_regclass('zz_users'), to_regtype('zz_mood')") == [(None, None)]
    assert sql(head_db, "SELECT user_id FROM sessions ORDER BY user_id") == [
        ("before the release",)
    ]
    # Something made by hand is still refused, and nothing is touched.
    sql(head_db, "CREATE TABLE hand_made (id int)")
    refused = run_inv(
        "db.restore",
        str(made.path),
        "--target",
        head_db.name,
        "--yes",
        database=head_db,
        env=env,
    )
    assert refused.returncode == 1 and "table hand_made" in refused.stderr


# --- the restore check's own server running out of disk is not a bad backup ----------------


@pytest.mark.root  # a full disk is a small tmpfs, which only root may mount
def test_a_full_disk_on_the_check_server_leaves_a_good_backup_unjudged(
    head_db: DatabaseConfig,
    backups: Path,
    tmp_path: Path,
    shared_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # More rows than full_db has: their restore needs well over the 1 MB the disk has left.
    with psycopg.connect(**head_db.connect_kwargs(), autocommit=True) as conn:
        assert sample_data.fill_many(conn, 2000, per_parent=3) == []
    made = create_backup(head_db, backups)
    # The server account reaches its data folder through here (pytest's tmp_path is private).
    with small_disk(shared_folder / "scratch", 120 * 1024 * 1024) as disk:
        disk.chmod(0o755)
        # Throwaway servers go to TMPDIR when /dev/shm is not there (servers.scratch).
        monkeypatch.setattr(scratch, "TMPFS", tmp_path / "no-shm")
        monkeypatch.setattr(tempfile, "tempdir", str(disk))
        check = start_scratch_server(place=ScratchPlace(None, "the default"))
        try:
            assert check.cluster is not None
            data = check.cluster.cluster.data
            assert data.is_relative_to(disk)
            # Room for the new database (a copy of template0) and little of what it restores.
            template0 = sql(check.admin, "SELECT pg_database_size('template0')")[0][0]
            fill_leaving(disk, template0 + 1024 * 1024)
            with pytest.raises(DiskFull) as full:
                restoring.verify_restorable(made, check)
            message = str(full.value)
            assert "restore check could not finish" in message and str(data) in message
            assert "not restorable" not in message and "dropped again" not in message
            assert len(message.splitlines()) <= 2 and "Traceback" not in message
            assert manifests.read_manifest(made.path).state == "written"
            leftovers = sql(
                check.admin,
                "SELECT datname FROM pg_database WHERE datname LIKE %s",
                ("uaip\\_verify\\_%",),
            )
            assert leftovers == []
        finally:
            check.close()


def fill_leaving(disk: Path, room: int) -> None:
    """Fill `disk` until `room` bytes are left."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / "ballast", "wb") as ballast:
        ballast.truncate(0)
        remaining = max(free - room, 0)
        chunk = b"\0" * (1 << 20)
        while remaining > 0:
            remaining -= ballast.write(chunk[: min(len(chunk), remaining)])
