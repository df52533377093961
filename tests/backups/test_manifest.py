"""A backup's folder and manifest: what it holds, damage and additions refused, pruning."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.backups.conftest import flip_one_byte, rewrite_manifest, tamper
from tests.conftest import sql
from uaip_db.backups import folder as folders
from uaip_db.backups import manifest as manifests
from uaip_db.backups.dump import create_backup
from uaip_db.backups.manifest import Backup
from uaip_db.backups.restore import restore_backup
from uaip_db.errors import CheckFailed, SettingsError
from uaip_db.migrations import history
from uaip_db.settings import DatabaseConfig


def test_manifest_describes_the_backup(full_db: DatabaseConfig, backups: Path) -> None:
    made = create_backup(full_db, backups)
    manifest = manifests.read_manifest(made.path / "manifest.json")
    assert manifest == made.manifest == manifests.check_files(made.path)
    assert re.fullmatch(
        rf"{full_db.name}-\d{{8}}T\d{{6}}Z-{history.load().heads[0]}", made.path.name
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
    assert data["compression"] == manifest.compression  # pg_dump's default or zstd:1 (test_dump)
    assert data["jobs"] == 1 and data["format"] == "custom"
    assert made.restore_command() == f"inv db.restore {made.path}"


def test_backups_of_the_same_second_get_their_own_folder(
    head_db: DatabaseConfig, backups: Path
) -> None:
    first = create_backup(head_db, backups)
    second = create_backup(head_db, backups)
    assert first.path != second.path
    assert folders.list_backups(backups, head_db.name) == [second.path, first.path]


def test_a_backup_object_restores_through_its_own_command(
    head_db: DatabaseConfig, backups: Path
) -> None:
    made = create_backup(head_db, backups)
    assert isinstance(made, Backup)
    assert made.restore_command().split() == ["inv", "db.restore", str(made.path)]


def test_a_damaged_directory_dump_and_added_files_are_refused(
    full_db: DatabaseConfig, backups: Path
) -> None:
    made = create_backup(full_db, backups, jobs=2)
    data_file = max((made.path / "dump").glob("*.dat.*"), key=lambda p: p.stat().st_size)
    tamper(data_file, flip_one_byte)
    with pytest.raises(CheckFailed, match=rf"dump/{data_file.name} does not match"):
        manifests.check_files(made.path)
    tamper(data_file, flip_one_byte)  # undone
    manifests.check_files(made.path)
    (made.path / "dump" / "extra.dat").write_bytes(b"x")
    with pytest.raises(CheckFailed, match=r"dump/extra.dat is not in its manifest"):
        manifests.check_files(made.path)
    (made.path / "dump" / "extra.dat").unlink()
    data_file.unlink()
    with pytest.raises(CheckFailed, match=rf"dump/{data_file.name} is missing"):
        manifests.check_files(made.path)


def test_missing_or_unreadable_backups(tmp_path: Path, new_target: DatabaseConfig) -> None:
    with pytest.raises(SettingsError, match=r"^No backup at .*nothing-here"):
        restore_backup(tmp_path / "nothing-here", new_target)
    (tmp_path / "no-manifest").mkdir()
    with pytest.raises(SettingsError, match=r"has no manifest.json"):
        manifests.check_files(tmp_path / "no-manifest")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text('{"format_version": 1}')
    with pytest.raises(CheckFailed, match=r"manifest.json cannot be read"):
        manifests.read_manifest(tmp_path / "bad")


def test_manifest_entries_cannot_point_outside_the_backup(
    head_db: DatabaseConfig, backups: Path
) -> None:
    made = create_backup(head_db, backups)
    entry = {"path": "../../etc/passwd", "size": 1, "sha256": "0" * 64}
    rewrite_manifest(made.path, files=[entry])
    with pytest.raises(CheckFailed, match="points outside the backup"):
        manifests.check_files(made.path)
