"""The rollback plan: each way back to the current revision, with what it costs.

Restoring the backup discards every write made after the backup was taken, in every table. A
downgrade keeps those writes but loses what the revisions declare (`destroys_data_on_downgrade`,
`irreversible`) and what the schemas show it drops (checks.data_loss); its guards (DO blocks the
revisions' downgrades emit, e.g. `ops.refuse_if_longer_than`) stop it at their revision, which
stays applied, where it would have to lose values. The SQL is the revisions' real downgrade
path, guards included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from uaip_db.catalog import expected
from uaip_db.errors import UaipDbError
from uaip_db.migrations import history
from uaip_db.release import sql as sqltext
from uaip_db.release.items import sql_digest
from uaip_db.release.report import APPENDIX, FAIL, PASS, Item

if TYPE_CHECKING:
    from uaip_db.backups.manifest import Backup
    from uaip_db.backups.rehearse import Rehearsal

RESTORE_COST = (
    "restoring the backup discards every write made after it was taken{when}, in every table "
    "(not only the tables this release changes)"
)


@dataclass
class DowngradeCost:
    """What a downgrade from head to the current revision loses, and what stops it."""

    declared: list[str] = field(default_factory=list)  # "`rev`: drops sessions.email"
    computed: list[str] = field(default_factory=list)  # tables and columns that disappear
    guards: list[str] = field(default_factory=list)  # what each guard refuses
    impossible: list[str] = field(default_factory=list)  # irreversible revisions
    unknown: str | None = None  # why the computed part could not be computed

    def lines(self) -> list[str]:
        lines = [
            "- Declared by the revisions: "
            + ("; ".join(self.declared) if self.declared else "no data loss declared")
        ]
        if self.unknown:
            lines.append(f"- Computed from the schemas: not known ({self.unknown})")
        else:
            lines.append(
                "- Computed from the schemas (tables and columns that disappear, with all they "
                "hold): " + (", ".join(f"`{name}`" for name in self.computed) or "none")
            )
        lines += [
            f"- Guard: the downgrade stops at this revision, leaving it applied, when {text}"
            for text in self.guards
        ]
        return lines

    def short(self) -> str:
        """What a possible downgrade costs, in one line."""
        losses = []
        if self.declared:
            losses.append("declared: " + "; ".join(self.declared))
        if self.computed:
            names = ", ".join(f"`{name}`" for name in self.computed)
            losses.append(f"computed: {names} with all they hold")
        text = f"loses data ({'; '.join(losses)})" if losses else "loses no data the schemas show"
        if self.guards:
            text += f", and {len(self.guards)} guard(s) stop it rather than truncate values"
        return text


def downgrade_cost(
    current: str, head: str, pending: list[history.Revision], rollback_sql: str
) -> DowngradeCost:
    from uaip_db.checks.data_loss import lost_objects

    cost = DowngradeCost()
    for revision in pending:
        if revision.irreversible:
            cost.impossible.append(
                f"`{revision.revision}` is irreversible: {revision.irreversible}"
            )
        if revision.destroys_data_on_downgrade:
            cost.declared.append(
                f"`{revision.revision}` drops {revision.destroys_data_on_downgrade}"
            )
    try:
        cost.computed = lost_objects(expected.snapshot(head), expected.snapshot(current)).names()
    except UaipDbError as error:
        cost.unknown = str(error)
    for step in sqltext.steps(rollback_sql):
        cost.guards += [_guard_text(text) for text in step.guards()]
    return cost


def _guard_text(message: str) -> str:
    """`sessions.user_id has N value(s) longer than 255 characters; ...` -> the condition."""
    condition = message.split(";", 1)[0].replace("has N value(s)", "has any value")
    return (
        f"{condition} (it would otherwise lose data); then shorten or remove those values, "
        "or take way A"
    )


def rollback_item(
    current: str,
    pending: list[history.Revision],
    made: Backup | None,
    name: str,
    rollback_sql: str | None,
    cost: DowngradeCost,
    error: str | None = None,
    rehearsed: Rehearsal | None = None,
) -> Item:
    """Both ways back as a person runs them, what each loses, and how long each took on the
    rehearsal copy (way A: the restore; way B: the downgrade run there after the upgrade)."""
    title = "Rollback plan"
    if not pending:
        return Item(
            title,
            PASS,
            ["Nothing is applied, so nothing to roll back."],
            "rollback",
            "nothing to roll back",
        )
    when = f" ({made.manifest.created_at})" if made else ""
    body = ["Two ways back to `" + current + "`, each with its cost:", ""]
    if made is not None:
        body += [
            f"**A. Restore the backup** taken for this release: "
            f"`inv db.restore {made.path} --target {name} --yes --confirm-db {name}`.",
            "",
            f"- **Cost: {RESTORE_COST.format(when=when)}.** Every session, answer and message "
            "written after that moment is lost, also where the release changed nothing.",
            "- Use it when the release is undone before anything written since matters.",
            f"- {restore_took(rehearsed)}",
        ]
    else:
        body += ["**A. Restore the backup**: not possible, no backup was taken."]
    body += [
        "",
        f"**B. Downgrade** to `{current}`: "
        f"`inv db.downgrade --rev {current} --yes --confirm-db {name}`.",
        "",
    ]
    failed_there = downgrade_failed(rehearsed)
    downgrade_possible = rollback_sql is not None and not cost.impossible and not failed_there
    if cost.impossible:
        body += [f"- Not possible: {'; '.join(cost.impossible)}."]
    elif rollback_sql is None:
        body += [f"- Not possible: its SQL cannot be rendered: {error}"]
    elif failed_there:
        body += [f"- Not possible as printed: on the rehearsal copy it failed: {failed_there}"]
    else:
        body += [
            "- It keeps the writes made after the release, but:",
            *(f"  {line}" for line in cost.lines()),
            f"- {downgrade_took(rehearsed)}",
            "",
            f"It runs, per revision (the full SQL with its guards is Part 2 of `{APPENDIX}`):",
            "",
            *sql_digest(rollback_sql, {r.revision: r.doc for r in pending}),
        ]
    if made is None and not downgrade_possible:
        return Item(title, FAIL, [*body, "", "There is no way back."], "rollback", "no way back")
    body[2:2] = [_preferred(made is not None, downgrade_possible, cost), ""]
    ways = []
    if made is not None:
        ways.append("A: restore (loses every write since the backup)")
    if downgrade_possible:
        ways.append(f"B: downgrade ({cost.short()})")
    return Item(title, PASS, body, "rollback", "; ".join(ways))


def restore_took(rehearsed: Rehearsal | None) -> str:
    if rehearsed is None:
        return "Its time is not known: the backup was not restored in a rehearsal."
    return (
        f"On the rehearsal copy the restore took {rehearsed.restored_seconds:.2f} s (the "
        "database is unavailable meanwhile)."
    )


def downgrade_took(rehearsed: Rehearsal | None) -> str:
    if rehearsed is None or rehearsed.way_back_seconds is None:
        return "Its time is not known: it was not run on a rehearsal copy."
    return (
        f"On the rehearsal copy, after the upgrade, it took {rehearsed.way_back_seconds:.2f} s "
        f"and the schema it reached verified as `{rehearsed.way_back}`."
    )


def downgrade_failed(rehearsed: Rehearsal | None) -> str | None:
    if rehearsed is None or not rehearsed.way_back_problems:
        return None
    return "; ".join(" ".join(p.split()) for p in rehearsed.way_back_problems)


def _preferred(restore: bool, downgrade: bool, cost: DowngradeCost) -> str:
    if not downgrade:
        return "**Only A is possible.**"
    if not restore:
        return "**Only B is possible.**"
    if cost.declared or cost.computed:
        return (
            "**Preferred: A**, soon after the release: B loses data too, and A's cost grows "
            "with every write after the backup."
        )
    return (
        "**Preferred: B**: it keeps every write made since the release; A only when the "
        "downgrade fails or those writes may be lost."
    )
