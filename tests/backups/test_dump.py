"""Making backups: round trips keep every row; jobs, compression, file modes, tool errors."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from tests.backups.conftest import hashes, take_snapshot
from uaip_db import process
from uaip_db.backups import dump
from uaip_db.backups import folder as folders
from uaip_db.backups import manifest as manifests
from uaip_db.backups import restore as restoring
from uaip_db.backups.dump import create_backup
from uaip_db.backups.restore import restore_backup
from uaip_db.catalog.snapshot import take
from uaip_db.errors import SettingsError, UaipDbError
from uaip_db.migrations import applied, history
from uaip_db.servers.binaries import find_binaries
from uaip_db.servers.local import find_bindir
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig


def test_backup_drop_restore_keeps_every_row(
    server: ScratchServer, full_db: DatabaseConfig, backups: Path
) -> None:
    before = hashes(full_db)
    fingerprint = take(full_db).digest()
    assert before and all(rows.count > 0 for rows in before.values())  # every table, as filled

    started = time.monotonic()
    made = create_backup(full_db, backups)
    dumped = time.monotonic() - started
    server.drop_database(full_db.name)
    report = restore_backup(made.path, full_db)

    assert report.verified and report.created
    assert hashes(full_db) == before
    assert made.manifest.fingerprint == fingerprint
    assert take(full_db) == take_snapshot(made.path)
    assert (
        applied.current_revisions(full_db) == made.manifest.revisions == tuple(history.load().heads)
    )
    assert report.tables == len(made.manifest.row_counts)
    assert report.rows == sum(made.manifest.row_counts.values())
    assert report.rows >= sum(rows.count for rows in before.values())
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
    assert manifests.read_manifest(made.path).compression == 1
    assert restoring.verify_restorable(made, server, jobs=2).verified
    with pytest.raises(SettingsError, match="0 to 9"):
        create_backup(full_db, backups, compression=12)
    with pytest.raises(SettingsError, match="zstd:LEVEL"):
        create_backup(full_db, backups, compression="brotli")


def test_by_default_a_backup_is_zstd_where_pg_dump_has_it(
    server: ScratchServer, full_db: DatabaseConfig, backups: Path, new_target: DatabaseConfig
) -> None:
    pg_dump = process.tool("pg_dump", find_bindir())
    expected = dump.fastest_compression(pg_dump, process.tool_version(pg_dump))
    pg_config = Path(pg_dump).with_name("pg_config")
    built_with_zstd = "--with-zstd" in process.execute([str(pg_config), "--configure"]).stdout
    assert expected == ("zstd:1" if built_with_zstd else None)

    made = create_backup(full_db, backups)

    assert made.manifest.compression == expected
    assert manifests.read_manifest(made.path).compression == expected
    assert restore_backup(made.path, new_target).verified
    assert hashes(new_target) == hashes(full_db)


def test_pg_dump_before_16_keeps_its_own_default() -> None:
    older = find_binaries(15).bindir / "pg_dump"
    assert dump.fastest_compression(str(older), process.tool_version(str(older))) is None
    assert dump.fastest_compression("/nowhere/pg_dump", "16.4") is None  # no pg_config beside it


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
    assert folders.list_backups(backups, full_db.name) == []

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
    monkeypatch.setenv("PG_BINDIR", str(bindir))  # client programs only: its pg_dump is used
    with pytest.raises(SettingsError) as refused:
        create_backup(head_db, backups)
    message = str(refused.value)
    assert "pg_dump 9.6.24 is older than the server (15.5)" in message
    assert "PG_BINDIR" in message
    assert list(backups.iterdir()) == []


def test_jobs_must_be_positive(head_db: DatabaseConfig, backups: Path) -> None:
    with pytest.raises(SettingsError, match="1 or more"):
        create_backup(head_db, backups, jobs=0)
