"""A rehearsed upgrade: restore a backup into a throwaway database, upgrade it, verify, check.

The database the backup came from is never touched. Only complete backups are rehearsed on, and
the rehearsal says whether the one it used was verified. It reports each revision's time and,
statement by statement, the relation locks it took (migrations.lock_report). With `load`, the
upgrade runs under application-like writers and is measured (backups.load): what each statement
made the writers wait, their latencies before and during it, their errors, against a budget.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uaip_db import pg
from uaip_db.backups import folder as folders
from uaip_db.backups import manifest as manifests
from uaip_db.backups import restore as restoring
from uaip_db.backups.load import LoadReport, under_load
from uaip_db.backups.throwaway import REHEARSAL_PREFIX, throwaway_database
from uaip_db.backups.workload import LoadSettings
from uaip_db.checks.status import inspect
from uaip_db.checks.verify import verify
from uaip_db.errors import (
    BackupError,
    CheckFailed,
    ConnectionProblem,
    DiskFull,
    SettingsError,
    UaipDbError,
)
from uaip_db.migrations import runner
from uaip_db.migrations.lock_report import LockRecorder, StatementLocks, held_by
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig


@dataclass
class Rehearsal:
    backup: Path
    restored_seconds: float
    steps: list[str] = field(default_factory=list)
    locks: dict[str, list[StatementLocks]] = field(default_factory=dict)
    upgrade_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    backup_state: str | None = None
    load: LoadReport | None = None
    # The way back rehearsed on the upgraded copy: a downgrade to where the backup was.
    way_back: str | None = None  # the revision it went down to
    way_back_seconds: float | None = None
    way_back_problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def verified(self) -> bool:
        return self.backup_state == manifests.VERIFIED

    def summary(self) -> list[str]:
        lines = [
            f"backup {self.backup.name}: {manifests.describe_state(self.backup_state)}",
            f"restored {self.backup.name} in {self.restored_seconds:.2f} s",
        ]
        lines += self.steps or ["  nothing to apply: the backup is at head"]
        if self.load is None:
            for revision, statements in self.locks.items():
                lines += lock_lines(revision, statements)
        lines.append(f"upgrade took {self.upgrade_seconds:.2f} s")
        if self.load is not None:  # each statement's locks, how long held, who waited
            lines += self.load.summary()
        lines += [f"problem: {p}" for p in self.problems] or ["verify and check: passed"]
        if self.way_back is not None and self.way_back_seconds is not None:
            lines.append(
                f"then downgraded to {self.way_back} in {self.way_back_seconds:.2f} s: "
                + ("; ".join(self.way_back_problems) or "verified")
            )
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "backup": str(self.backup),
            "backup_state": self.backup_state,
            "restored_seconds": round(self.restored_seconds, 3),
            "upgrade_seconds": round(self.upgrade_seconds, 3),
            "steps": self.steps,
            "locks": {
                revision: [
                    {"statement": s.statement, "locks": s.locks, "held_seconds": s.held_seconds}
                    for s in statements
                ]
                for revision, statements in self.locks.items()
            },
            "load": self.load.to_json() if self.load is not None else None,
            "passed": self.passed,
            "problems": self.problems,
            "way_back": {
                "downgraded_to": self.way_back,
                "seconds": None
                if self.way_back_seconds is None
                else round(self.way_back_seconds, 3),
                "problems": self.way_back_problems,
            },
        }


STATEMENTS_SHOWN = 8


def lock_lines(revision: str, statements: list[StatementLocks]) -> list[str]:
    """`locks held by REV: ...` and one indented line per statement that took a lock."""
    held = ", ".join(held_by(statements)) or "none on tables"
    shown = [f"    {s.line()}" for s in statements[:STATEMENTS_SHOWN]]
    if len(statements) > STATEMENTS_SHOWN:
        shown.append(f"    ... and {len(statements) - STATEMENTS_SHOWN} more statement(s)")
    return [f"  locks held by {revision}: {held}", *shown]


def identity_of(config: DatabaseConfig) -> manifests.Identity | None:
    """Which database `config` names now (server and oid), or None when it cannot be reached."""

    try:
        with pg.connection(config) as conn:
            return manifests.Identity(
                pg.system_identifier(conn), config.name, pg.database_oid(conn)
            )
    except ConnectionProblem:
        return None


def newest_backup(
    directory: Path, database: str, identity: manifests.Identity | None = None
) -> Path:
    """The newest complete backup of `database` in `directory` whose restore check did not fail;
    with a known `identity` (the database as it is now), only a backup of that very database on
    that server: a namesake's on another server, or of a dropped predecessor, is another database.
    """

    found = [
        (path, manifest)
        for path, manifest in folders.complete_backups(directory)
        if manifest.database == database and manifest.state != manifests.VERIFY_FAILED
    ]
    if not found:
        raise SettingsError(
            f"No backup of {database} in {directory}; run `inv db.backup` first or name one."
        )
    if identity is None or not identity.known:
        return found[0][0]
    mine = [path for path, manifest in found if manifest.identity.same_as(identity)]
    if not mine:
        raise SettingsError(
            f"None of the {len(found)} backup(s) of {database} in {directory} is of this "
            "database on this server (another server's, or of a database since dropped); run "
            "`inv db.backup` first, or name the backup to rehearse on."
        )
    return mine[0]


def rehearse(
    source: Path,
    server: ScratchServer,
    report: Callable[[str], None] | None = None,
    after_upgrade: Callable[[DatabaseConfig], None] | None = None,
    load: LoadSettings | None = None,
    prove_backup: bool = False,
    steps: Steps | None = None,
    upgrade: UpgradeCopy | None = None,
) -> Rehearsal:
    """Restore `source` into a throwaway database, upgrade it to head, verify and check it.
    `after_upgrade` is called with the upgraded copy while it still exists (a release check runs
    the application's start-up check on it). With `load`, writers run during the upgrade and
    the rehearsal fails when one waited longer than its budget, or failed. With
    `prove_backup`, the restore (checked against the manifest) is also the backup's restore
    check: its manifest records verified or verify failed, as `db.backup` would. With `steps`,
    the upgrade goes one revision at a time, `steps.after_each` is called after each, and at the
    end the copy is downgraded again to `steps.way_back` (the rollback plan's way B), timed."""
    folder = manifests.backup_folder(source)
    with folders.holding(folder):
        # The files are checked before anything is said about the backup (a damaged one is
        # never announced as verified), and only once: the restore is handed the result.
        with _proving(folder, prove_backup):
            manifest = manifests.check_files(folder)
        if report:
            report(
                f"Rehearsing on {folder.name}; the backup is "
                f"{manifests.describe_state(manifest.state)}."
            )
        with throwaway_database(server, REHEARSAL_PREFIX, report) as target:
            started = time.perf_counter()
            with _proving(folder, prove_backup):
                restored = restoring.restore_backup(
                    folder, target, server_admin=server.admin, checked=manifest
                )
            seconds = time.perf_counter() - started
            backup_state = restored.backup_state
            if prove_backup:
                backup_state = folders.record_state(folder, manifests.VERIFIED).state
            result = Rehearsal(folder, seconds, backup_state=backup_state)
            if report:
                report(
                    f"Restored {result.backup.name} into a throwaway database in "
                    f"{result.restored_seconds:.2f} s; upgrading it:"
                )
            _upgrade(target, result, report, load, steps, upgrade or _runner_upgrade)
            checked = verify(target)
            result.problems += checked.differences + checked.edited
            status = inspect(target)
            result.problems += status.problems
            result.problems += [f"still pending: {p}" for p in status.pending]
            if after_upgrade is not None:
                after_upgrade(target)
            if steps is not None and steps.way_back is not None and result.passed:
                _downgrade(target, result, steps.way_back)
    return result


# How the copy is upgraded to a revision: operations.upgrade_copy (the path db.upgrade takes),
# handed in by the callers above this layer.
UpgradeCopy = Callable[[DatabaseConfig, str, Callable[[str], None], LockRecorder | None], None]


def _runner_upgrade(
    target: DatabaseConfig, revision: str, report: Callable[[str], None], locks: LockRecorder | None
) -> None:
    runner.upgrade(target, revision, report=report, locks=locks)


@dataclass(frozen=True)
class Steps:
    """The upgrade one revision at a time: `before(copy)` first, `revisions` in order,
    `after_each(copy, revision)` called after each (neither's time is the upgrade's), then a
    downgrade to `way_back`."""

    revisions: list[str]
    after_each: Callable[[DatabaseConfig, str], None] | None
    way_back: str | None = None
    before: Callable[[DatabaseConfig], None] | None = None  # called on the copy before them


def _downgrade(target: DatabaseConfig, result: Rehearsal, revision: str) -> None:
    """Way B on the copy, as the rollback plan prints it: down to `revision`, then verified."""

    result.way_back = revision
    started = time.perf_counter()
    try:
        runner.downgrade(target, revision)
    except UaipDbError as error:
        result.way_back_problems.append(str(error))
    result.way_back_seconds = time.perf_counter() - started
    if not result.way_back_problems:
        checked = verify(target)
        result.way_back_problems += checked.differences + checked.edited


@contextlib.contextmanager
def _proving(folder: Path, prove_backup: bool) -> Iterator[None]:
    """With `prove_backup`, a check or restore that fails records "verify failed" in the
    backup's manifest, as `db.backup`'s own restore check would."""
    try:
        yield
    except DiskFull:
        raise  # the throwaway server's disk, not the backup: its state stays as it was
    except (CheckFailed, BackupError):
        if prove_backup:
            with contextlib.suppress(CheckFailed, BackupError):
                folders.record_state(folder, manifests.VERIFY_FAILED)
        raise


def _upgrade(
    target: DatabaseConfig,
    result: Rehearsal,
    report: Callable[[str], None] | None,
    load: LoadSettings | None,
    steps: Steps | None,
    upgrade: UpgradeCopy,
) -> None:
    recorder = LockRecorder(target)
    try:
        if load is None:
            _timed_upgrade(target, result, report, recorder, steps, upgrade)
            return
        with under_load(target, recorder, load, report) as measuring:
            measuring.upgrade_started()
            _timed_upgrade(target, result, report, recorder, steps, upgrade)
            measuring.upgrade_ended()
        result.load = measuring.result
        if result.load is not None:
            result.problems += result.load.problems()
    finally:
        recorder.close()
        result.locks = recorder.by_revision


def _timed_upgrade(
    target: DatabaseConfig,
    result: Rehearsal,
    report: Callable[[str], None] | None,
    recorder: LockRecorder,
    steps: Steps | None,
    upgrade: UpgradeCopy,
) -> None:

    def step(line: str) -> None:
        result.steps.append(line)
        if report:
            report(line)

    if steps is not None and steps.before is not None:
        steps.before(target)
    for revision in steps.revisions if steps is not None else ["head"]:
        started = time.perf_counter()
        try:
            upgrade(target, revision, step, recorder)
        except UaipDbError as error:
            result.problems.append(str(error))
            return
        finally:
            result.upgrade_seconds += time.perf_counter() - started
        if steps is not None and steps.after_each is not None:
            steps.after_each(target, revision)
