"""The items of a release check, each a verdict with the facts behind it.

Each function returns an `Item` (and what later items need); none raises for a failure it can
describe: a failure is a FAIL item, so the report is always written.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from uaip_db.catalog import expected
from uaip_db.errors import UaipDbError
from uaip_db.migrations import history, phases
from uaip_db.release import sql as sqltext
from uaip_db.release.report import APPENDIX, FAIL, PASS, Item
from uaip_db.release.source import SourceState
from uaip_db.settings import DatabaseConfig

if TYPE_CHECKING:
    from uaip_db.backups.manifest import Backup
    from uaip_db.backups.rehearse import Rehearsal, Steps
    from uaip_db.backups.workload import LoadSettings
    from uaip_db.servers.scratch import ScratchServer


def fenced(text: str, language: str = "sql") -> list[str]:
    return [f"```{language}", text.rstrip(), "```"]


def revisions_item(pending: list[history.Revision]) -> Item:
    if not pending:
        return Item(
            "Revisions to apply",
            PASS,
            ["None: the database is at head."],
            "revisions",
            "none: the database is at head",
        )
    judged = [(r, phases.judge(r)) for r in pending]
    lines = [f"{n}. `{r.revision}` {r.doc}: {j.line()}" for n, (r, j) in enumerate(judged, 1)]
    return Item(
        "Revisions to apply",
        PASS,
        [*lines, "", *order_of_operations([(r.revision, j.phase) for r, j in judged])],
        "revisions",
        f"{len(pending)} revision(s)",
    )


def order_of_operations(steps: list[tuple[str, str]]) -> list[str]:
    """The deploy in order: expand revisions while the running release serves, then the new
    release everywhere, then the contract revisions (docs/MIGRATIONS.md)."""
    expand = [revision for revision, phase in steps if phase == phases.EXPAND]
    contract = [revision for revision, phase in steps if phase != phases.EXPAND]
    if not contract:
        return [
            "Order: `inv db.upgrade` first (expand only: the running release keeps working on "
            "it and may restart meanwhile), then deploy the new release."
        ]
    first_contract = next(n for n, (_, phase) in enumerate(steps) if phase != phases.EXPAND)
    before = [revision for revision, _ in steps[:first_contract]]
    lines = ["Order:"]
    if before:
        lines.append(
            f"1. `inv db.upgrade --rev {before[-1]}` (expand: {', '.join(before)}); the running "
            "release keeps working."
        )
    lines.append(
        f"{len(lines)}. Deploy the new release to every instance; the previous release does not "
        f"survive {', '.join(contract)}."
    )
    lines.append(f"{len(lines)}. `inv db.upgrade` (contract: {', '.join(contract)}).")
    if len(expand) > len(before):
        lines.append("Expand revisions after a contract one wait for it: split the release.")
    return lines


def sql_digest(text: str, docs: dict[str, str]) -> list[str]:
    """Per revision, its statements on one line each (see release.sql)."""
    lines: list[str] = []
    for step in sqltext.steps(text):
        lines.append(
            f"- `{step.revision}` {docs.get(step.revision, '')} ({step.direction}, "
            f"{len(step.statements)} statement(s)):"
        )
        lines += sqltext.digest(step)
    return lines


def sql_item(upgrade_sql: str | None, error: str | None, docs: dict[str, str]) -> Item:
    if error is not None:
        return Item("SQL to run", FAIL, [error], "sql", "cannot be rendered")
    if not upgrade_sql:
        return Item("SQL to run", PASS, ["Nothing to run."], "sql", "nothing to run")
    count = sqltext.count(upgrade_sql)
    body = [
        f"The exact SQL (`alembic upgrade CURRENT:head --sql`, with the lock_timeout and "
        f"statement_timeout every migration runs with) is Part 1 of `{APPENDIX}`. In short:",
        "",
        *sql_digest(upgrade_sql, docs),
    ]
    return Item("SQL to run", PASS, body, "sql", f"{count} statement(s); full text in the appendix")


def schema_change_item(current: str, head: str) -> Item:
    from uaip_db.docs import changes

    try:
        old, new = expected.snapshot(current), expected.snapshot(head)
    except UaipDbError as error:
        return Item("Schema change", FAIL, [str(error)], "schema_change", "unknown")
    summary = changes.change_summary(old, new)
    if not summary:
        return Item("Schema change", PASS, ["No schema change."], "schema_change", "none")
    tables = {change.table for change in changes.changes(old, new) if change.table}
    return Item(
        "Schema change",
        PASS,
        [f"- {line}" for line in summary]
        + ["", *fenced(changes.change_diagram(old, new), "mermaid")],
        "schema_change",
        f"{len(summary)} change(s) in {len(tables)} table(s)",
    )


def lint_item(since: str) -> Item:
    from uaip_db.checks.lint import lint

    try:
        findings, notes, docs = lint(None if since == expected.BASE else since)
    except UaipDbError as error:
        return Item("Migration lint", FAIL, [str(error)], "lint", "could not run")
    body = [f"- {f.headline(docs)}" for f in findings] or ["No findings (squawk and our rules)."]
    body += [f"- note: {n}" for n in notes]
    brief = f"{len(findings)} finding(s)" if findings else "no findings"
    return Item("Migration lint", FAIL if findings else PASS, body, "lint", brief)


def take_backup(config: DatabaseConfig, backup_dir: Path) -> tuple[Backup | None, str | None]:
    """The release's backup (its restore check is the rehearsal's restore), or why none."""
    from uaip_db.backups import dump

    try:
        return dump.create_backup(config, backup_dir), None
    except UaipDbError as error:
        return None, str(error)


def retention(made: Backup | None, proven: bool, kept: int) -> list[str]:
    """Prune the release backups of `made`'s database (same server) to the newest `kept`, never
    `made`; only once `made` is proven restorable. The report's lines: the rule, what went."""
    from uaip_db.backups import folder

    rule = (
        f"- Retention: the newest {kept} release backup(s) of this database on this server are "
        f"kept in `{made.path.parent if made else 'the release backup folder'}` "
        "(UAIP_RELEASE_BACKUPS_KEPT)"
    )
    if made is None or not proven:
        return [rule, "- Nothing pruned: this run has no backup proven restorable"]
    if not made.manifest.identity.known:
        return [
            rule,
            "- Nothing pruned: the role may not read the server's system identifier, so older "
            "backups cannot be told apart from another server's",
        ]
    removed = folder.prune(made.path.parent, made, kept)
    if not removed:
        return [rule, "- Removed: none"]
    return [rule, "- Removed: " + ", ".join(f"`{path.name}`" for path in removed)]


def backup_item(made: Backup | None, failure: str | None, rehearsal: Rehearsal | None) -> Item:
    """The backup, proven restorable by the rehearsal's restore (its manifest says so)."""
    from uaip_db.backups import manifest as manifests

    if made is None:
        return Item("Backup", FAIL, [failure or "no backup"], "backup", "no usable backup")
    manifest = manifests.read_manifest(made.path)
    rows = sum(manifest.row_counts.values())
    if manifest.state != manifests.VERIFIED or rehearsal is None:
        return Item(
            "Backup",
            FAIL,
            [
                f"- Backup: `{made.path}`, {manifests.describe_state(manifest.state)}",
                "- It was not proven restorable: see the rehearsal item for why.",
            ],
            "backup",
            "not proven restorable",
        )
    return Item(
        "Backup",
        PASS,
        [
            f"- Backup: `{made.path}`, taken {manifest.created_at}",
            f"- Revision {manifest.revision_label}, {len(manifest.row_counts)} tables, "
            f"{rows} rows, fingerprint `{(manifest.fingerprint or '')[:16]}`",
            "- Files checked against the manifest (sha256), then restored into a throwaway "
            "database and verified (revision, fingerprint, row counts) in "
            f"{rehearsal.restored_seconds:.2f} s; the rehearsal then ran on that copy",
            f"- Restore command: `{made.restore_command()}`",
        ],
        "backup",
        f"{rows} rows, proven restorable in {rehearsal.restored_seconds:.2f} s",
    )


def rehearsal_items(
    made: Backup | None,
    server: ScratchServer,
    load: LoadSettings | None = None,
    steps: Steps | None = None,
) -> tuple[Item, Item, Rehearsal | None]:
    """The rehearsal (under writers with `load`; one revision at a time with `steps`), and the
    application's start-up check run on its copy while it exists."""
    from uaip_db.backups import rehearse

    if made is None:
        return (
            Item("Rehearsal", FAIL, ["No backup to rehearse on."], "rehearsal", "no backup"),
            _no_copy("there was no backup to rehearse on"),
            None,
        )
    checked: list[Item] = []
    try:
        result = rehearse.rehearse(
            made.path,
            server,
            after_upgrade=lambda copy: checked.append(application_item(copy)),
            load=load,
            prove_backup=True,
            steps=steps,
        )
    except UaipDbError as error:
        return (
            Item("Rehearsal", FAIL, [str(error)], "rehearsal", "could not rehearse"),
            checked[0] if checked else _no_copy("the rehearsal stopped before the upgrade"),
            None,
        )
    brief = rehearsal_brief(result)
    item = Item(
        "Rehearsal",
        PASS if result.passed else FAIL,
        [f"    {line}" for line in result.summary()],
        "rehearsal",
        brief,
        data=result.to_json(),
    )
    return item, checked[0] if checked else _no_copy("the rehearsal made no copy"), result


def rehearsal_brief(result: Rehearsal) -> str:
    """A few words: the time, or the statement that broke the writers' budget, or the count."""
    measured = result.load
    over = measured.over_budget() if measured is not None else []
    if measured is not None and over:
        return (
            f"writers waited {over[0].longest_wait:.2f} s (budget "
            f"{measured.settings.max_writer_wait:g} s) behind `{over[0].statement}` "
            f"in {over[0].revision}"
        )
    if not result.passed:
        return f"{len(result.problems)} problem(s) on the restored copy"
    brief = f"upgrade took {result.upgrade_seconds:.2f} s on the restored copy"
    if measured is not None:
        brief += f"; longest writer wait {measured.longest_wait:.2f} s"
    return brief


APPLICATION = "Application"
START_UP = "`uaip_db.check_migrations()`, the check the application runs at start-up"


def application_item(copy: DatabaseConfig) -> Item:
    """What the application would say at start-up on the rehearsed (restored, upgraded) copy."""
    import uaip_db

    try:
        status = uaip_db.check_migrations(copy)
    except UaipDbError as error:
        return Item(
            APPLICATION,
            FAIL,
            [
                f"{START_UP}, refused the rehearsed copy (database `{copy.name}`): the "
                "application would not start on the released schema.",
                "",
                *(f"    {line}" for line in str(error).splitlines()),
            ],
            "application",
            f"start-up check refused the new schema ({type(error).__name__})",
        )
    return Item(
        APPLICATION,
        PASS,
        [
            f"{START_UP}, accepted the rehearsed copy (database `{copy.name}`, the backup "
            "restored and upgraded): the application will start on the released schema.",
            f"    {status.summary()}",
            "It checks the schema the application starts on, not the application's own queries.",
        ],
        "application",
        "start-up check accepts the new schema",
    )


def _no_copy(why: str) -> Item:
    return Item(
        APPLICATION,
        FAIL,
        [f"{START_UP}, was not run: {why}."],
        "application",
        "not checked: no rehearsed copy",
    )


def code_item(state: SourceState) -> Item:
    """The commit being released, and whether the checkout is exactly that commit."""
    title = "Code under release"
    if state.problem is not None:
        return Item(title, FAIL, [f"Not known: {state.problem}."], "code", "commit unknown")
    body = [
        f"- Commit: `{state.commit}`" + (f" (branch `{state.branch}`)" if state.branch else ""),
        f"- Checkout: `{state.root}`",
    ]
    if state.clean:
        body.append(
            "- migrations/, src/ and database/ are exactly that commit: nothing modified, "
            "nothing untracked, every revision file tracked."
        )
        return Item(
            title, PASS, body, "code", f"commit {state.commit[:12] if state.commit else ''}, clean"
        )
    if state.changed:
        body += ["- Not committed (`git status --porcelain`, under migrations/, src/, database/):"]
        body += [f"    - `{line}`" for line in state.changed]
    if state.untracked_revisions:
        body += ["- Revision files git does not track (they would be applied unreviewed):"]
        body += [f"    - `{path}`" for path in state.untracked_revisions]
    body.append("- Commit or remove them, then run `inv release.check` again.")
    count = len(set(state.changed_paths()) | set(state.untracked_revisions))
    return Item(title, FAIL, body, "code", f"{count} uncommitted file(s)")
