"""`inv release.check`: the release checklist as a command, written out as a report to sign.

Against the configured (production) database it lists the revisions to apply with their SQL and
the schema change they make, lints them, takes a backup and proves it restorable, rehearses the
upgrade on a restored copy, and writes the rollback plan. The database itself is only read and
dumped; nothing is applied to it.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from uaip_db import paths
from uaip_db.backups import dump
from uaip_db.backups import restore as restoring
from uaip_db.catalog import expected
from uaip_db.errors import UaipDbError
from uaip_db.migrations import history, runner
from uaip_db.pg import connection
from uaip_db.settings import DatabaseConfig

PASS, FAIL = "PASS", "FAIL"


@dataclass
class Item:
    title: str
    status: str
    body: list[str] = field(default_factory=list)


@dataclass
class ReleaseReport:
    database: str
    current: str
    head: str
    pending: list[str]
    items: list[Item] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(item.status != FAIL for item in self.items)

    def markdown(self, written_at: str) -> str:
        lines = [
            f"# Release check: {self.database}",
            "",
            f"Written {written_at} by `inv release.check`. "
            f"Overall: **{PASS if self.passed else FAIL}**",
            "",
            f"- Database revision: `{self.current}`; head: `{self.head}`",
            f"- Revisions to apply: {len(self.pending)}",
            "",
            "| # | item | result |",
            "| --- | --- | --- |",
        ]
        lines += [f"| {n} | {item.title} | {item.status} |" for n, item in enumerate(self.items, 1)]
        for number, item in enumerate(self.items, 1):
            lines += ["", f"## {number}. {item.title}: {item.status}", "", *item.body]
        lines += [
            "",
            "## Sign-off",
            "",
            "- [ ] Release manager: the report is complete and every item passed",
            "- [ ] Database owner: the rollback plan and the backup are acceptable",
            "- [ ] Application owner: the application works with the new schema",
            "",
            "Name: ____________________  Date: ____________  Signature: ____________________",
            "",
        ]
        return "\n".join(lines)


def fenced(text: str, language: str = "sql") -> list[str]:
    return [f"```{language}", text.rstrip(), "```"]


def release_check(
    config: DatabaseConfig,
    backup_dir: Path,
    out: Callable[[str], None],
) -> tuple[ReleaseReport, Path]:
    from uaip_db.servers.scratch import scratch_server

    index = history.load()
    index.single_head()
    with connection(config) as conn:
        current_revisions = runner.current_revisions_on(conn)
    current = current_revisions[0] if current_revisions else expected.BASE
    head = index.single_head()
    pending = index.pending(current_revisions)
    report = ReleaseReport(
        config.display_url(), current, head, [f"{r.revision} {r.doc}" for r in pending]
    )
    out(f"Release check of {config.display_url()}: {len(pending)} revision(s) to apply.")
    report.items.append(revisions_item(pending))
    report.items.append(sql_item(current, head, bool(pending)))
    report.items.append(schema_change_item(current, head))
    report.items.append(lint_item(current if pending else head))
    out("  backing up and proving the backup restorable...")
    with scratch_server() as server:
        backup_item_, made = backup_item(config, backup_dir, server)
        report.items.append(backup_item_)
        out("  rehearsing the upgrade on a restored copy...")
        report.items.append(rehearsal_item(made, server))
    report.items.append(rollback_item(current, head, pending, made, config.name))
    written_at = datetime.datetime.now(datetime.UTC)
    target = write_new(
        paths.reports_dir(),
        f"release-{written_at:%Y%m%dT%H%M%SZ}",
        report.markdown(f"{written_at:%Y-%m-%d %H:%M:%S} UTC"),
    )
    return report, target


def write_new(directory: Path, stem: str, text: str) -> Path:
    """Write `stem.md` in `directory`, or `stem-2.md`, ...: a report never overwrites another."""
    directory.mkdir(parents=True, exist_ok=True)
    for number in range(1, 1000):
        path = directory / (f"{stem}.md" if number == 1 else f"{stem}-{number}.md")
        try:
            with path.open("x", encoding="utf-8") as file:
                file.write(text)
        except FileExistsError:
            continue
        return path
    raise UaipDbError(f"Too many reports named {stem}*.md in {directory}; move some away.")


def revisions_item(pending: list[history.Revision]) -> Item:
    if not pending:
        return Item("Revisions to apply", PASS, ["None: the database is at head."])
    return Item(
        "Revisions to apply",
        PASS,
        [f"{n}. `{r.revision}` {r.doc}" for n, r in enumerate(pending, 1)],
    )


def sql_item(current: str, head: str, anything: bool) -> Item:
    if not anything:
        return Item("SQL to run", PASS, ["Nothing to run."])
    try:
        return Item("SQL to run", PASS, fenced(runner.render_sql(current, head)))
    except UaipDbError as error:
        return Item("SQL to run", FAIL, [str(error)])


def schema_change_item(current: str, head: str) -> Item:
    from uaip_db.docs import changes

    try:
        old, new = expected.snapshot(current), expected.snapshot(head)
    except UaipDbError as error:
        return Item("Schema change", FAIL, [str(error)])
    summary = changes.change_summary(old, new)
    if not summary:
        return Item("Schema change", PASS, ["No schema change."])
    return Item(
        "Schema change",
        PASS,
        [f"- {line}" for line in summary]
        + ["", *fenced(changes.change_diagram(old, new), "mermaid")],
    )


def lint_item(since: str) -> Item:
    from uaip_db.checks.lint import lint

    try:
        findings, notes, docs = lint(None if since == expected.BASE else since)
    except UaipDbError as error:
        return Item("Migration lint", FAIL, [str(error)])
    body = [f"- {f.line(docs)}" for f in findings] or ["No findings (squawk and our rules)."]
    body += [f"- note: {n}" for n in notes]
    return Item("Migration lint", FAIL if findings else PASS, body)


def backup_item(
    config: DatabaseConfig, backup_dir: Path, server: object
) -> tuple[Item, Path | None]:
    from uaip_db.servers.scratch import ScratchServer

    assert isinstance(server, ScratchServer)
    try:
        made = dump.create_backup(config, backup_dir)
        restored = restoring.verify_restorable(made, server)
    except UaipDbError as error:
        return Item("Backup", FAIL, [str(error)]), None
    manifest = made.manifest
    return (
        Item(
            "Backup",
            PASS,
            [
                f"- Backup: `{made.path}`",
                f"- Revision {manifest.revision_label}, {len(manifest.row_counts)} tables, "
                f"{sum(manifest.row_counts.values())} rows, "
                f"fingerprint `{manifest.fingerprint[:16]}`",
                f"- Files checked against the manifest (sha256), then restored into a throwaway "
                "database and verified (revision, fingerprint, row counts) in "
                f"{restored.seconds:.2f} s",
                f"- Restore command: `{made.restore_command()}`",
            ],
        ),
        made.path,
    )


def rehearsal_item(made: Path | None, server: object) -> Item:
    from uaip_db.backups import rehearse
    from uaip_db.servers.scratch import ScratchServer

    assert isinstance(server, ScratchServer)
    if made is None:
        return Item("Rehearsal", FAIL, ["No backup to rehearse on."])
    try:
        result = rehearse.rehearse(made, server)
    except UaipDbError as error:
        return Item("Rehearsal", FAIL, [str(error)])
    return Item(
        "Rehearsal", PASS if result.passed else FAIL, [f"    {line}" for line in result.summary()]
    )


def rollback_item(
    current: str, head: str, pending: list[history.Revision], made: Path | None, name: str
) -> Item:
    if not pending:
        return Item("Rollback plan", PASS, ["Nothing is applied, so nothing to roll back."])
    restore = (
        f"`inv db.restore {made} --target {name} --yes --confirm-db {name}`"
        if made
        else "the backup (none was taken)"
    )
    lossy = []
    for revision in pending:
        if revision.irreversible or revision.destroys_data_on_downgrade:
            loss = revision.irreversible or f"drops {revision.destroys_data_on_downgrade}"
            lossy.append(f"`{revision.revision}` ({loss})")
    body = [
        f"If the release must be undone, downgrade to `{current}` "
        f"(`inv db.downgrade --rev {current} --yes --confirm-db {name}`), which runs:",
        "",
        *fenced(runner.render_sql(head, current, downgrade=True)),
    ]
    if lossy:
        body = [
            "A downgrade would lose data written after the release in: " + ", ".join(lossy) + ".",
            f"Preferred rollback: restore the backup taken for this release: {restore}.",
            "",
            "Otherwise:",
            *body,
        ]
    else:
        body += ["", f"Or restore the backup taken for this release: {restore}."]
    return Item("Rollback plan", PASS, body)
