"""The backup folder: backups appear complete or not at all; pruning removes only older backups
of the same database (server, name, oid), never the one just made, never one in use."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tests.backups.conftest import cut_manifest, rewrite_manifest
from uaip_db import pg
from uaip_db.backups import folder as folders
from uaip_db.backups import manifest as manifests
from uaip_db.backups.dump import create_backup
from uaip_db.errors import CheckFailed, SettingsError
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig


def test_prune_keeps_the_newest(
    head_db: DatabaseConfig, empty_db: DatabaseConfig, backups: Path
) -> None:
    made = [create_backup(head_db, backups) for _ in range(4)]
    other = create_backup(empty_db, backups)
    (backups / "not-a-backup").mkdir()
    (backups / "half-written").mkdir()
    (backups / "half-written" / "dump.pgdump").write_bytes(b"")
    newest_first = [m.path for m in reversed(made)]
    assert folders.list_backups(backups, head_db.name) == newest_first
    assert other.path.name.endswith("-base")

    removed = folders.prune(backups, made[-1], keep=2)
    assert removed == newest_first[2:]
    assert folders.list_backups(backups, head_db.name) == newest_first[:2]
    assert folders.list_backups(backups, empty_db.name) == [other.path]
    assert (backups / "not-a-backup").is_dir() and (backups / "half-written").is_dir()
    with pytest.raises(SettingsError):
        folders.prune(backups, made[-1], keep=0)


def test_a_backup_knows_its_database_its_place_and_its_state(
    server: ScratchServer, head_db: DatabaseConfig, backups: Path
) -> None:
    first = create_backup(head_db, backups)
    second = create_backup(head_db, backups, state=manifests.NOT_VERIFIED)
    with pg.connection(head_db) as conn:
        assert first.manifest.system_identifier == pg.system_identifier(conn)
        assert first.manifest.database_oid == pg.database_oid(conn)
    assert first.manifest.system_identifier and first.manifest.system_identifier.isdigit()
    assert first.manifest.identity.same_as(second.manifest.identity)
    assert second.manifest.sequence == (first.manifest.sequence or 0) + 1
    assert (first.manifest.state, second.manifest.state) == ("written", "not verified")
    data = json.loads((second.path / "manifest.json").read_text())
    assert data["state"] == "not verified" and data["database_oid"] == first.manifest.database_oid
    assert [p.name for p in backups.iterdir() if p.name.startswith(".partial-")] == []


def test_older_manifests_are_read_and_never_pruned(head_db: DatabaseConfig, backups: Path) -> None:
    old = create_backup(head_db, backups)
    data = json.loads((old.path / "manifest.json").read_text())
    for key in ("system_identifier", "database_oid", "state", "sequence"):
        del data[key]
    (old.path / "manifest.json").write_text(json.dumps(data))
    manifest = manifests.check_files(old.path)
    assert manifest.state is None and not manifest.identity.known
    assert "not known to be verified" in manifests.describe_state(manifest.state)

    newer = [create_backup(head_db, backups) for _ in range(2)]
    assert folders.list_backups(backups, head_db.name) == [newer[1].path, newer[0].path, old.path]
    assert folders.prune(backups, newer[1], keep=1) == [newer[0].path]
    assert old.path.is_dir()


def test_prune_spares_other_servers_and_a_recreated_namesake(
    server: ScratchServer, head_db: DatabaseConfig, namesake: DatabaseConfig, backups: Path
) -> None:
    theirs = create_backup(namesake, backups)
    ours = create_backup(head_db, backups)
    assert theirs.manifest.database == ours.manifest.database
    assert theirs.manifest.system_identifier != ours.manifest.system_identifier
    # Dropped and created again under the same name: another database (another oid).
    server.drop_database(head_db.name)
    pg.create_database(server.connection(), head_db.name)
    recreated = create_backup(head_db, backups)
    assert recreated.manifest.database_oid != ours.manifest.database_oid

    assert folders.prune(backups, recreated, keep=1) == []
    assert theirs.path.is_dir() and ours.path.is_dir() and recreated.path.is_dir()
    again = create_backup(head_db, backups)
    assert folders.prune(backups, again, keep=1) == [recreated.path]
    assert theirs.path.is_dir() and ours.path.is_dir()


def test_prune_goes_by_creation_order_not_by_the_clock(
    head_db: DatabaseConfig, backups: Path
) -> None:
    older = create_backup(head_db, backups)
    rewrite_manifest(older.path, created_at="2999-12-31T23:59:59.000000Z")
    forged = create_backup(head_db, backups)
    rewrite_manifest(forged.path, sequence=10**12)
    made = create_backup(head_db, backups)
    assert made.manifest.sequence == 10**12 + 1
    assert folders.list_backups(backups, head_db.name) == [made.path, forged.path, older.path]
    assert folders.prune(backups, made, keep=2) == [older.path]
    assert made.path.is_dir() and forged.path.is_dir()


def test_prune_never_removes_the_one_just_made(head_db: DatabaseConfig, backups: Path) -> None:
    older = create_backup(head_db, backups)
    made = create_backup(head_db, backups)
    newer = create_backup(head_db, backups)
    # A run whose backup is no longer the newest (another run finished meanwhile) keeps it.
    assert folders.prune(backups, made, keep=1) == [older.path]
    assert made.path.is_dir() and newer.path.is_dir()
    with pytest.raises(SettingsError, match="is not in"):
        folders.prune(backups / "elsewhere", made, keep=1)


def test_prune_spares_unreadable_manifests_and_backups_in_use(
    head_db: DatabaseConfig, backups: Path
) -> None:
    unreadable = create_backup(head_db, backups)
    in_use = create_backup(head_db, backups)
    cut_manifest(unreadable.path)
    made = create_backup(head_db, backups)
    with folders.holding(in_use.path):
        assert folders.prune(backups, made, keep=1) == []
    assert unreadable.path.is_dir() and in_use.path.is_dir()
    assert folders.prune(backups, made, keep=1) == [in_use.path]
    assert unreadable.path.is_dir()


def test_an_unfinished_backup_is_never_listed_restored_or_swept_while_its_run_lives(
    head_db: DatabaseConfig, backups: Path
) -> None:
    made = create_backup(head_db, backups)
    live = folders.start_partial(backups, head_db.name, made.manifest.revisions)
    try:
        # A complete-looking manifest inside it changes nothing: it is not renamed yet.
        newest = dataclasses.replace(made.manifest, sequence=99)
        (live.path / "manifest.json").write_text(newest.to_json())
        assert folders.list_backups(backups, head_db.name) == [made.path]
        with pytest.raises(SettingsError, match="is an unfinished backup"):
            manifests.check_files(live.path)
        assert folders.sweep_partials(backups) == []
        assert live.path.is_dir()
    finally:
        live.release()
    dead = backups / ".partial-from-a-killed-run"
    dead.mkdir()
    (dead / "dump.pgdump").write_bytes(b"x" * 100)
    assert folders.sweep_partials(backups) == [dead, live.path]
    assert made.path.is_dir()


def test_the_survey_names_backups_whose_manifest_cannot_be_read(
    head_db: DatabaseConfig, backups: Path
) -> None:
    good = create_backup(head_db, backups)
    bad = create_backup(head_db, backups)
    cut_manifest(bad.path)
    (backups / "not-a-backup").mkdir()  # no manifest.json: not a backup, not a damaged one
    unfinished = backups / ".partial-killed-run"
    unfinished.mkdir()
    (unfinished / "manifest.json").write_text("{")
    found = folders.survey(backups)
    assert [path for path, _ in found.backups] == [good.path]
    assert [item.path for item in found.damaged] == [bad.path]
    problem = found.damaged[0].problem
    assert problem.startswith("its manifest.json cannot be read (")
    # db.restore refuses it in the same words.
    with pytest.raises(CheckFailed) as refused:
        manifests.check_files(bad.path)
    assert f"Backup {bad.path} is damaged: {problem}." in str(refused.value)
    assert folders.complete_backups(backups) == found.backups
