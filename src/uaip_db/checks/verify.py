"""Is the live schema the one its recorded revision should have? And which revision is it?"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from uaip_db import files
from uaip_db.catalog import expected, trust
from uaip_db.catalog.snapshot import DEFAULT_SCHEMAS, Snapshot, describe, diff, take_from
from uaip_db.errors import CHECK_FAILED, CheckFailed
from uaip_db.migrations import applied, history, ledger, snapshots
from uaip_db.pg import reading
from uaip_db.settings import DatabaseConfig


@dataclass
class Verification:
    database: str
    revision: str
    expected_digest: str
    actual_digest: str
    differences: list[str] = field(default_factory=list)
    edited: list[str] = field(default_factory=list)
    # Set when the committed snapshots predate a revision file: nothing was compared.
    stale: str = ""

    @property
    def exit_code(self) -> int:
        return CHECK_FAILED if self.differences or self.edited or self.stale else 0

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "exit_code": self.exit_code}, indent=2)


def edited_revisions(
    recorded: dict[str, ledger.Entry], index: history.ScriptIndex | None = None
) -> list[str]:
    """Applied revisions whose file changed after the ledger recorded it."""
    index = index or history.load()
    found = []
    for revision, entry in sorted(recorded.items()):
        script = index.get(revision)
        if script is not None and files.sha256_of(script.path) != entry.file_sha256:
            found.append(
                f"Revision {revision} ({script.doc}) was edited after it was applied "
                f"({entry.how} on {entry.applied_at:%Y-%m-%d %H:%M} by {entry.applied_by}); "
                f"{edited_advice(script)}"
            )
    return found


def edited_advice(script: history.Revision) -> str:
    """What to do about an applied revision file that changed (docs/MIGRATIONS.md, *Changing a
    revision you applied but have not pushed*): it depends on whether others have it."""
    parent = script.down_revisions[0] if script.down_revisions else expected.BASE
    return (
        "if it was pushed, revert the edit and put the change in a new revision; if not, "
        f"`inv db.downgrade --rev {parent} && inv db.upgrade` records it anew."
    )


def verify(database: DatabaseConfig) -> Verification:
    with reading(database) as conn:
        trust.check_bookkeeping(conn, DEFAULT_SCHEMAS)
        current = applied.current_revisions_on(conn)
        actual = take_from(conn)
        recorded = ledger.entries(conn)
    if len(current) > 1:
        raise CheckFailed(f"The database records several revisions ({', '.join(current)}).")
    revision = current[0] if current else expected.BASE
    if revision != expected.BASE and history.load().get(revision) is None:
        raise history.unknown_revision(revision)
    edited = edited_revisions(recorded)
    stale = snapshots.staleness(revision)
    if stale:
        # Comparing with a stale snapshot would report drift that is not there.
        return Verification(
            database.display_url(), revision, "", actual.digest(), [], edited, stale
        )
    wanted = expected.snapshot(revision)
    return Verification(
        database=database.display_url(),
        revision=revision,
        expected_digest=wanted.digest(),
        actual_digest=actual.digest(),
        differences=diff(wanted, actual),
        edited=edited,
    )


@dataclass(frozen=True)
class Reached:
    """The schema a migration left, against the committed snapshot of the revision it reached."""

    revision: str
    # What differs and was not already so before the migration: the migration's doing.
    differences: list[str]
    # Differences that were there before the migration too (an object made by hand), left out.
    earlier: int = 0
    # Why nothing was compared (several heads; snapshots that predate a revision file, as while
    # a new revision is being written), else "".
    not_compared: str = ""

    def first(self, count: int = 3) -> str:
        shown = "; ".join(self.differences[:count])
        more = len(self.differences) - count
        return shown + (f"; and {more} more" if more > 0 else "")


def drift(current: tuple[str, ...], actual: Snapshot) -> list[str] | None:
    """How `actual` differs from the committed snapshot of `current`; None when there is no one
    fresh snapshot to compare with (several heads, snapshots that predate a revision file)."""
    if len(current) > 1:
        return None
    revision = current[0] if current else expected.BASE
    if revision != expected.BASE and snapshots.staleness(revision):  # base needs no file
        return None
    wanted = expected.snapshot(revision)
    return [] if wanted.digest() == actual.digest() else diff(wanted, actual)


def reached(
    current: tuple[str, ...],
    actual: Snapshot,
    start: tuple[str, ...] = (),
    before: Snapshot | None = None,
) -> Reached:
    """Compare `actual`, read right after a migration from `start` (schema `before`) ended at
    `current`, with the committed snapshot of `current` (what `db.verify` would then say, without
    another connection). A difference that was there at the start too (against the snapshot of
    `start`) is not the migration's; when `start` has no fresh snapshot, every one counts."""
    revision = ", ".join(current) or expected.BASE
    found = drift(current, actual)
    if found is None:
        reason = "several revisions are recorded" if len(current) > 1 else ""
        return Reached(revision, [], not_compared=reason or str(snapshots.staleness(revision)))
    earlier = set(drift(start, before) or []) if before is not None and found else set()
    return Reached(
        revision, [line for line in found if line not in earlier], len(earlier & set(found))
    )


@dataclass
class Match:
    revision: str | None
    closest: str
    differences: list[str]


def identify(actual: Snapshot) -> Match:
    """The newest revision whose committed snapshot equals `actual`, else the closest one."""
    candidates = [expected.BASE] + [item.revision for item in history.load().order]
    best: tuple[int, str, list[str]] | None = None
    for revision in reversed(candidates):
        differences = diff(expected.snapshot(revision), actual)
        if not differences:
            return Match(revision, revision, [])
        if best is None or len(differences) < best[0]:
            best = (len(differences), revision, differences)
    assert best is not None
    return Match(None, best[1], best[2])


@dataclass(frozen=True)
class StampDecision:
    """What `db.stamp` will record, and how the schema compares with that revision's."""

    revision: str
    identified: bool  # found with `auto`
    differences: list[str]


def decide_stamp(actual: Snapshot, revision: str, *, force: bool) -> StampDecision:
    """Check `actual` against `revision` (or find the revision it is, for `auto`) before a stamp."""
    if revision == "auto":
        stale = snapshots.staleness()
        if stale:
            raise CheckFailed(stale)
        match = identify(actual)
        if match.revision is None:
            raise CheckFailed(
                "The schema matches no revision; the closest is "
                f"{match.closest}:\n{describe(match.differences)}\n"
                "Fix the schema, or stamp a revision with --rev REV --force."
            )
        if match.revision == expected.BASE:
            raise CheckFailed("The database has no UAIP schema; run `inv db.upgrade` instead.")
        return StampDecision(match.revision, True, [])
    if revision != expected.BASE:
        revision = history.load().resolve(revision)
        stale = snapshots.staleness(revision)
        if stale:
            raise CheckFailed(stale)
    differences = diff(expected.snapshot(revision), actual)
    if differences and not force:
        raise CheckFailed(
            f"The schema is not revision {revision}'s:\n{describe(differences)}\n"
            "Try --rev auto, fix the schema, or add --force if you are sure."
        )
    return StampDecision(revision, False, differences)
