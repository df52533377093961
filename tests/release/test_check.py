"""The release check's own flow: what it restores, and what a backup that will not restore does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HEAD, sql
from tests.migrations.test_phases import CONTRACT, add_expand_then_contract
from uaip_db.backups import manifest as manifests
from uaip_db.backups import restore as restoring
from uaip_db.migrations import applied, history
from uaip_db.release.check import release_check, upgrade_destroys
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig


def counting_restores(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every restore (the real one still runs) by the database it restores into."""
    restored: list[str] = []
    real = restoring.restore_backup

    def restore_backup(folder: Path, target: DatabaseConfig, **kwargs: Any) -> Any:
        restored.append(target.name)
        return real(folder, target, **kwargs)

    monkeypatch.setattr(restoring, "restore_backup", restore_backup)
    return restored


def test_one_restored_copy_proves_the_backup_and_carries_the_rehearsal(
    behind_db: DatabaseConfig,
    repo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    restored = counting_restores(monkeypatch)
    report, _path = release_check(behind_db, tmp_path / "backups", lambda line: None)
    assert report.passed, [
        (item.title, item.status) for item in report.items if item.status != "PASS"
    ]
    assert len(restored) == 1
    (folder,) = [p for p, _ in manifests_in(tmp_path / "backups")]
    assert manifests.read_manifest(folder).state == manifests.VERIFIED
    statuses = {item.key: item.status for item in report.items}
    assert statuses["backup"] == statuses["rehearsal"] == "PASS"


def test_a_backup_that_does_not_restore_fails_and_is_offered_as_no_way_back(
    behind_db: DatabaseConfig,
    behind_revision: str,
    repo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from uaip_db.errors import CheckFailed

    def broken(folder: Path, target: DatabaseConfig, **kwargs: Any) -> Any:
        raise CheckFailed(f"The restore of {folder.name} does not match its manifest.")

    monkeypatch.setattr(restoring, "restore_backup", broken)
    report, _path = release_check(behind_db, tmp_path / "backups", lambda line: None)
    assert not report.passed
    statuses = {item.key: item.status for item in report.items}
    assert statuses["backup"] == statuses["rehearsal"] == "FAIL"
    (folder,) = [p for p, _ in manifests_in(tmp_path / "backups")]
    assert manifests.read_manifest(folder).state == manifests.VERIFY_FAILED
    rollback = next(item for item in report.items if item.key == "rollback")
    assert "not possible" in "\n".join(rollback.body)
    assert applied.current_revisions(behind_db) == (behind_revision,)


def manifests_in(directory: Path) -> list[tuple[Path, manifests.Manifest]]:
    from uaip_db.backups import folder as folders

    return folders.complete_backups(directory)


def test_the_report_says_what_the_upgrade_itself_destroys(
    server: ScratchServer, checkout: Path, head_db: DatabaseConfig
) -> None:
    add_expand_then_contract(server, checkout)
    sql(head_db, "INSERT INTO sessions (user_id) VALUES ('s')")
    sql(
        head_db,
        "INSERT INTO checkpoints (session_id, stage_number, checkpoint_data) "
        "SELECT session_id, 2, '{}' FROM sessions",
    )
    pending = history.load().pending((HEAD,))
    said = upgrade_destroys(head_db, HEAD, CONTRACT, pending)
    assert said[0] == "checkpoints.stage_number: 1 row(s) with a value"
    assert said[-1] == f"declared: {CONTRACT}: kept in zz_label since the release before"
