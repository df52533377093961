"""`inv release.check`: run every item against the configured database and write the report.

The database itself is only read and dumped; nothing is applied to it. The rehearsal and the
application's start-up check run on a throwaway copy restored from the backup.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from uaip_db import paths
from uaip_db.backups.rehearse import Steps
from uaip_db.catalog import expected
from uaip_db.checks.data_loss import committed_losses, count_losses
from uaip_db.errors import UaipDbError
from uaip_db.migrations import applied, history, runner
from uaip_db.migrations.lock_report import held_by
from uaip_db.pg import connection, reading
from uaip_db.release import compatibility, items
from uaip_db.release.context import run_context, server_version
from uaip_db.release.report import PASS, ReleaseReport, ensure_writable, write_report
from uaip_db.release.rollback import (
    RESTORE_COST,
    DowngradeCost,
    downgrade_cost,
    downgrade_failed,
    rollback_item,
)
from uaip_db.release.source import source_state
from uaip_db.servers.scratch import scratch_server
from uaip_db.settings import DatabaseConfig, release_backups_kept

if TYPE_CHECKING:
    from uaip_db.backups.manifest import Backup
    from uaip_db.backups.rehearse import Rehearsal
    from uaip_db.backups.workload import LoadSettings


def release_check(
    config: DatabaseConfig,
    backup_dir: Path,
    out: Callable[[str], None],
    load: LoadSettings | None = None,
) -> tuple[ReleaseReport, Path]:
    """Run the checklist; the report and the path of its markdown file (twins beside it). With
    `load`, the rehearsal runs under writers and fails when one waits longer than its budget."""

    started = datetime.datetime.now(datetime.UTC)
    kept = release_backups_kept()  # a bad setting is named before anything is done
    ensure_writable(paths.reports_dir())
    index = history.load()
    head = index.single_head()
    with connection(config) as conn:
        current_revisions = applied.current_revisions_on(conn)
        version = server_version(conn)
    current = current_revisions[0] if current_revisions else expected.BASE
    pending = index.pending(current_revisions)
    docs = {r.revision: r.doc for r in pending}
    report = ReleaseReport(
        config.display_url(), current, head, [f"{r.revision} {r.doc}" for r in pending]
    )
    report.env = config.env
    report.context = run_context(config, version, f"{started:%Y-%m-%d %H:%M:%S} UTC")
    report.source = source_state(paths.project_root(), index)
    out(f"Release check of {config.display_url()}: {len(pending)} revision(s) to apply.")
    out(f"  code: {report.source.label().replace('`', '')}")
    destroys = upgrade_destroys(config, current, head, pending)

    upgrade_sql, sql_error = _render(current, head, bool(pending), downgrade=False)
    rollback_sql, rollback_error = _render(head, current, bool(pending), downgrade=True)
    report.upgrade_sql = _or_why(upgrade_sql, sql_error)
    report.rollback_sql = _or_why(rollback_sql, rollback_error)
    revisions = items.revisions_item(pending)
    if pending:
        revisions.body += [
            "",
            *compatibility.who_runs(index, current, [r.revision for r in pending]),
        ]
    report.items.append(revisions)
    report.items.append(items.sql_item(upgrade_sql, sql_error, docs))
    report.items.append(items.schema_change_item(current, head))
    report.items.append(items.lint_item(current if pending else head))
    cost = downgrade_cost(current, head, pending, rollback_sql or "")
    previous = compatibility.previous_release(index, current) if pending else None
    steps = Steps(
        [r.revision for r in pending],
        previous.after_each if previous is not None else None,
        way_back=current if pending and rollback_sql is not None and not cost.impossible else None,
        before=previous.before if previous is not None else None,
    )
    # The place for throwaway databases is checked before anything is dumped. One restored
    # copy serves both: it proves the backup restorable, then the upgrade is rehearsed on it
    # (restoring twice cost a full restore of the data).
    with scratch_server() as server:
        out("  backing up...")
        made, backup_failure = items.take_backup(config, backup_dir)
        out(
            "  restoring it into a throwaway database (the backup's restore check), rehearsing "
            "the upgrade on that copy"
            + (" under writers" if load else "")
            + ", then the application's start-up check..."
        )
        rehearsal, application, rehearsed = items.rehearsal_items(made, server, load, steps)
    backup = items.backup_item(made, backup_failure, rehearsed)
    backup.body += items.retention(made, backup.status == PASS, kept)
    report.items += [backup, rehearsal]
    if backup.status != PASS:
        made = None  # a backup not proven restorable is no way back
    report.items.append(
        rollback_item(
            current, pending, made, config.name, rollback_sql, cost, rollback_error, rehearsed
        )
    )
    report.items.append(application)
    report.items.append(items.code_item(report.source))
    if previous is not None and rehearsed is not None:
        report.items.append(previous.item())
    elif pending:
        report.items.append(compatibility.no_previous_release(current))
    report.decisions = decisions(report, made, rehearsed, cost, destroys)
    written_at = datetime.datetime.now(datetime.UTC)
    target = write_report(
        paths.reports_dir(),
        f"release-{written_at:%Y%m%dT%H%M%SZ}",
        report,
        f"{written_at:%Y-%m-%d %H:%M:%S} UTC",
    )
    return report, target


def _render(
    start: str, end: str, anything: bool, *, downgrade: bool
) -> tuple[str | None, str | None]:
    """The offline SQL from `start` to `end`, or why it cannot be rendered."""
    if not anything:
        return "", None
    try:
        return runner.render_sql(start, end, downgrade=downgrade), None
    except UaipDbError as error:
        return None, str(error)


def _or_why(text: str | None, error: str | None) -> str:
    return text if text is not None else f"-- It cannot be rendered: {error}"


# What a table lock held by a migration makes the application wait for.
LOCK_EFFECTS = {
    "AccessExclusiveLock": "reads and writes wait",
    "ExclusiveLock": "writes wait",
    "ShareRowExclusiveLock": "writes wait",
    "ShareLock": "writes wait",
    "ShareUpdateExclusiveLock": "reads and writes go on; only schema changes and VACUUM wait",
    "RowExclusiveLock": "like an ordinary write",
    "RowShareLock": "like a SELECT ... FOR UPDATE",
    "AccessShareLock": "like an ordinary read",
}


def lock_effects(locks: list[str]) -> str:
    """`AccessExclusiveLock on sessions, stage_data (reads and writes wait)`, one per mode."""
    tables: dict[str, set[str]] = {}
    for lock in locks:
        mode, _, table = lock.partition(" on ")
        tables.setdefault(mode, set()).add(table)
    if not tables:
        return "no table locks"
    return "; ".join(
        f"{mode} on {', '.join(sorted(names))} ({LOCK_EFFECTS.get(mode, 'see PostgreSQL docs')})"
        for mode, names in sorted(tables.items())
    )


def writers_line(rehearsed: Rehearsal) -> str:
    """What the rehearsal's writers went through, in one sentence."""
    measured = rehearsed.load
    if measured is None:
        return ""
    during = measured.during
    latency = (
        f"p50 {during.p50_ms:.1f} ms, p99 {during.p99_ms:.1f} ms"
        if during.p50_ms is not None and during.p99_ms is not None
        else "no transaction completed"
    )
    waited = (
        f"the longest any waited behind it was {measured.longest_wait:.2f} s"
        if measured.longest_wait > 0
        else "none was seen waiting behind it"
    )
    return (
        f"Under {measured.settings.clients} writers running the application's statements "
        f"(workload/, {measured.settings.rate} transactions/s) "
        f"{waited} (budget {measured.settings.max_writer_wait:g} s); their latency during it: "
        f"{latency}."
    )


LOCKS_SHOWN = 8


def statement_locks(rehearsed: Rehearsal, item: int | None) -> str:
    """Each statement that took a table lock, in the order the upgrade ran them, with how long
    it held its locks on the copy (until its transaction ended)."""
    taken = [
        (revision, statement)
        for revision, statements in rehearsed.locks.items()
        for statement in statements
        if statement.locks
    ]
    if not taken:
        return ""
    shown = [
        f"`{revision[:12]}` `{statement.statement}`: {', '.join(statement.locks)}, "
        + (
            f"held {statement.held_seconds * 1000:.0f} ms"
            if statement.held_seconds is not None
            else "hold time not measured"
        )
        for revision, statement in taken[:LOCKS_SHOWN]
    ]
    more = f"; {len(taken) - LOCKS_SHOWN} more in item {item}" if len(taken) > LOCKS_SHOWN else ""
    return " Table locks, in the order taken: " + "; ".join(shown) + more + "."


def upgrade_destroys(
    config: DatabaseConfig, current: str, head: str, pending: list[history.Revision]
) -> list[str]:
    """What the upgrade itself drops (tables, columns: from the committed snapshots) and what
    they hold in the database now, with each revision's own word for it (destroys_data)."""
    lost = committed_losses(current, head)
    if lost is None:
        return ["(not known: a revision has no committed snapshot)"]
    if not lost:
        return []
    try:
        with reading(config) as conn:
            held = {loss.target: loss.rows for loss in count_losses(conn, lost)}
    except UaipDbError as error:
        held = {}
        note = f" (not counted: {error})"
    else:
        note = ""
    said = "; ".join(f"{r.revision}: {r.destroys_data}" for r in pending if r.destroys_data)
    return [
        f"{name}: {held.get(name, 0)} row(s){' with a value' if '.' in name else ''}"
        for name in lost.names()
    ] + [f"declared: {said or 'by no revision'}{note}"]


def decisions(
    report: ReleaseReport,
    made: Backup | None,
    rehearsed: Rehearsal | None,
    cost: DowngradeCost,
    destroys: list[str] | None = None,
) -> list[str]:
    """What no check can settle: the questions a person answers before signing."""

    found: list[str] = []
    failed = report.failed()
    if failed:
        found.append(
            f"Whether to release at all: {len(failed)} item(s) failed ({', '.join(failed)}). "
            "Fix them and run `inv release.check` again; do not sign a failing report."
        )
    if not report.pending:
        return [*found, "Nothing: there is nothing to release."]
    if destroys:
        found.append(
            "Whether to destroy data: the upgrade itself drops "
            + "; ".join(destroys)
            + " (counted on the database now; no way back brings it back but the restore)."
        )
    if rehearsed is not None and rehearsed.passed:
        rows = sum(made.manifest.row_counts.values()) if made else 0
        found.append(
            f"When to run it: on a copy of the backup ({rows} rows) the upgrade took "
            f"{rehearsed.upgrade_seconds:.2f} s and held "
            + lock_effects([lock for s in rehearsed.locks.values() for lock in held_by(s)])
            + "."
            + statement_locks(rehearsed, report.number_of("rehearsal"))
            + (f" {writers_line(rehearsed)}" if rehearsed.load is not None else "")
        )
    restore = (
        RESTORE_COST.format(when=f" ({made.manifest.created_at})")
        if made
        else "there is no backup to restore"
    )
    if rehearsed is not None and made is not None:
        restore += f" (it took {rehearsed.restored_seconds:.2f} s on the rehearsal copy)"
    downgrade = (
        f"the downgrade is not possible ({'; '.join(cost.impossible)})"
        if cost.impossible
        else f"the downgrade keeps the writes made since but {cost.short()}"
    )
    failed_there = downgrade_failed(rehearsed)
    if failed_there:
        downgrade = f"the downgrade failed on the rehearsal copy ({failed_there})"
    elif rehearsed is not None and rehearsed.way_back_seconds is not None:
        downgrade += f" (it took {rehearsed.way_back_seconds:.2f} s on the rehearsal copy)"
    found.append(
        f"Which way back, if the release must be undone (item {report.number_of('rollback')}): "
        f"{restore}; {downgrade}."
    )
    played = report.number_of("previous_release")
    found.append(
        f"Whether the application works beyond start-up (item {report.number_of('application')}"
        "): its start-up check ran on the rehearsed copy"
        + (
            f", and the statements in workload/ after each revision (item {played})"
            if played
            else ""
        )
        + "; its other queries and screens are the application owner's to try."
    )
    return found
