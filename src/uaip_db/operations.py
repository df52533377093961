"""Change one database safely: plan, a verified backup first, the migration lock, apply, verify.

The one path that `inv db.upgrade` / `db.downgrade` (cli/), `inv fleet.upgrade` (fleet/, per
target) and the release checklist share. A plan reads where the database is and refuses what no
change may start from (a revision these scripts do not know, a target it is already past, an
INVALID index when there is nothing to do); for a downgrade it counts, from the committed
snapshots and the rows, what it would drop. Applying takes a verified backup first where one is
required (production, or asked), runs the migrations under the runner's lock, then refuses an
INVALID index left behind and a schema that is not the committed snapshot of the revision
reached. Each step reports progress through `report`; confirming a plan (`--yes`,
`--confirm-db`) is the caller's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uaip_db import paths, pg
from uaip_db.catalog import expected
from uaip_db.catalog.snapshot import Snapshot, take_from
from uaip_db.checks.verify import Reached, reached
from uaip_db.errors import CheckFailed, MigrationError, UaipDbError, UsageError
from uaip_db.migrations import applied, history, runner
from uaip_db.migrations.lock import DEFAULT_WAIT_SECONDS
from uaip_db.settings import DatabaseConfig

if TYPE_CHECKING:
    import psycopg

    from uaip_db.checks.data_loss import DataLoss
    from uaip_db.migrations.lock_report import LockRecorder

Report = Callable[[str], None]
# How the verified backup before a change is taken (the caller's way of saying it); the
# default, `verified_backup` into the backup folder, says nothing.
TakeBackup = Callable[[DatabaseConfig], object]

# Revision names that are not a single revision to resolve: relative steps, branches, ranges.
RELATIVE_MARKS = "+@:"


def _silent(_line: str) -> None:
    pass


# --- planning ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpgradePlan:
    """Where a database is before an upgrade, and whether one has anything to do."""

    database: DatabaseConfig
    revision: str  # as asked: head, heads, an id or a prefix, or a relative name
    wanted: tuple[str, ...] | None  # what `revision` resolves to; None for a relative name
    current: tuple[str, ...]
    pending: tuple[str, ...]  # the revisions not applied yet, oldest first
    invalid: tuple[str, ...]  # INVALID indexes

    @property
    def nothing_to_do(self) -> bool:
        return self.wanted is not None and sorted(self.current) == sorted(self.wanted)

    def to_json(self) -> dict[str, Any]:
        return {
            "database": self.database.display_url(),
            "revision": self.revision,
            "current": list(self.current),
            "pending": list(self.pending),
            "invalid_indexes": list(self.invalid),
            "nothing_to_do": self.nothing_to_do,
        }


def wanted_revisions(index: history.ScriptIndex, revision: str) -> tuple[str, ...] | None:
    """The revisions an upgrade to `revision` ends at (an unknown name is refused here, before
    anything is read or done); None for a relative name, a branch or a range."""
    if revision == "heads":
        return tuple(index.heads)
    if any(mark in revision for mark in RELATIVE_MARKS):
        return None
    return (index.resolve(revision),)


def read_upgrade(
    conn: psycopg.Connection[Any], database: DatabaseConfig, revision: str = "head"
) -> UpgradePlan:
    """Where the database on `conn` is (one query each, no lock, no Alembic), unjudged."""
    index = history.load()
    wanted = wanted_revisions(index, revision)
    current = applied.current_revisions_on(conn)
    pending = tuple(item.revision for item in index.pending(current))
    return UpgradePlan(
        database, revision, wanted, current, pending, tuple(pg.invalid_indexes(conn))
    )


def refuse_to_start(plan: UpgradePlan, command: str = "db.upgrade") -> None:
    """Refuse what no upgrade may start from; `command` names what to run again."""
    index = history.load()
    for recorded in plan.current:
        if index.get(recorded) is None:
            raise history.unknown_revision(recorded)
    if plan.nothing_to_do:
        # A CONCURRENTLY step that failed half-way is never "nothing to do"; behind, the upgrade
        # runs (such steps are safe to run again) and what it leaves INVALID is refused after.
        refuse_invalid_indexes(plan.invalid, command)
    elif plan.wanted is not None and set(plan.wanted) <= index.ancestors(plan.current):
        raise UsageError(f"It is past {', '.join(plan.wanted)}; {command} does not downgrade.")


def plan_upgrade(
    conn: psycopg.Connection[Any],
    database: DatabaseConfig,
    revision: str = "head",
    *,
    command: str = "db.upgrade",
) -> UpgradePlan:
    """Where the database on `conn` is, refused when no upgrade may start from there."""
    plan = read_upgrade(conn, database, revision)
    refuse_to_start(plan, command)
    return plan


def refuse_invalid_indexes(invalid: tuple[str, ...] | list[str], command: str) -> None:
    if invalid:
        raise CheckFailed(
            f"Index {', '.join(invalid)} is INVALID (a CONCURRENTLY build or drop failed "
            f"half-way): drop it with DROP INDEX CONCURRENTLY and run `inv {command}` again, or "
            "rebuild it with REINDEX INDEX CONCURRENTLY."
        )


@dataclass(frozen=True)
class DowngradePlan:
    """What a downgrade reverts, and what it would drop, counted from the schema and the rows."""

    database: DatabaseConfig
    revision: str  # as asked: -1, -N, an id, base
    current: tuple[str, ...]
    steps: history.DowngradePlan
    # Tables and columns it would empty, with their rows; None when no committed snapshot of the
    # target tells (treated as data loss).
    losses: tuple[DataLoss, ...] | None

    @property
    def target(self) -> str:
        return self.steps.target

    @property
    def declared(self) -> bool:
        """A reverted revision's author declared that its downgrade destroys data."""
        return any(item.destroys_data_on_downgrade for item in self.steps.reverted)

    @property
    def drops_data(self) -> bool:
        return (
            self.losses is None
            or bool(self.losses)
            or self.declared
            or self.target == expected.BASE
        )

    @property
    def needs_confirmation(self) -> bool:
        """Data loss needs a yes; in production every downgrade does (and the name)."""
        return self.drops_data or self.database.is_production

    def to_json(self) -> dict[str, Any]:
        return {
            "database": self.database.display_url(),
            "current": list(self.current),
            "target": self.target,
            "reverted": [item.revision for item in self.steps.reverted],
            "losses": None
            if self.losses is None
            else [{"target": lost.target, "rows": lost.rows} for lost in self.losses],
            "drops_data": self.drops_data,
        }


def plan_downgrade(
    database: DatabaseConfig, revision: str = "-1", report: Report | None = None
) -> DowngradePlan:
    """What going down to `revision` reverts and empties; said through `report` as it is found
    (counting rows can take a while on a large table)."""
    from uaip_db.checks.data_loss import downgrade_losses  # noqa: PLC0415 (only a downgrade counts rows)

    say = report or _silent
    index = history.load()
    current = applied.current_revisions(database)
    steps = index.downgrade_plan(current, revision)
    say(f"Downgrading {database.display_url()} by {len(steps.reverted)} revision(s):")
    for item in steps.reverted:
        loss = item.destroys_data_on_downgrade
        say(f"  {item.revision} {item.doc}" + (f"  [drops {loss}]" if loss else ""))
    say("  counting the rows it would drop...")
    losses = downgrade_losses(database, steps.target)
    if losses is None:
        say(
            f"  No committed snapshot of {steps.target} tells what this drops; treating it as "
            "data loss."
        )
    for lost in losses or []:
        say(f"  would drop {lost.line()}")
    return DowngradePlan(
        database, revision, current, steps, None if losses is None else tuple(losses)
    )


# --- the verified backup first -----------------------------------------------------------------


def backup_reason(database: DatabaseConfig, asked: bool) -> str | None:
    """Why a verified backup comes before a change (always in production; elsewhere when
    asked), or None."""
    if database.is_production:
        return "DB_ENV=production"
    return "--backup" if asked else None


def verified_backup(
    database: DatabaseConfig, folder: Path, scratch_admin: DatabaseConfig | None = None
) -> Path:
    """A backup of `database` in `folder`, proven restorable on a throwaway server (the run's,
    when `scratch_admin` names one; else one started for it)."""
    # Imported here: an upgrade with nothing to do, the common case, never loads pg_dump's side.
    from uaip_db.backups import dump, restore  # noqa: PLC0415
    from uaip_db.servers.scratch import ScratchServer, scratch_server  # noqa: PLC0415

    with contextlib.ExitStack() as stack:
        if scratch_admin is not None:
            server = ScratchServer(scratch_admin)
            stack.callback(server.close)
        else:
            server = stack.enter_context(scratch_server())
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with dump.new_backup(database, folder) as made:
            restore.verify_restorable(made, server)
        return made.path


def _backup_first(
    database: DatabaseConfig,
    step: str,
    asked: bool,
    take_backup: TakeBackup | None,
    report: Report,
) -> bool:
    """Take the verified backup a change needs, before it; a failure changes nothing."""
    why = backup_reason(database, asked)
    if why is None:
        return False
    report(f"Taking a verified backup first ({why}):")
    take = take_backup or (lambda config: verified_backup(config, paths.backup_dir()))
    try:
        take(database)
    except UaipDbError as error:
        # Its own class keeps its exit status: a setting to fix (2) stays a setting to fix.
        raise type(error)(
            f"The backup before the {step} failed, so nothing was changed: {error}"
        ) from None
    except OSError as error:
        raise CheckFailed(
            f"The backup before the {step} failed, so nothing was changed: {error}"
        ) from None
    return True


# --- applying ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """Where a change left the database, and its schema against the revision reached."""

    before: tuple[str, ...]
    current: tuple[str, ...]
    ran: tuple[str, ...]  # the revisions applied (upgrade) or reverted (downgrade)
    reached: Reached
    backed_up: bool
    seconds: float
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "before": list(self.before),
            "current": list(self.current),
            "ran": list(self.ran),
            "backed_up": self.backed_up,
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
        }


@contextlib.contextmanager
def saying_where_it_stopped(database: DatabaseConfig, before: tuple[str, ...]) -> Iterator[None]:
    """A migration that fails after other revisions went through names where the database is
    now: each revision commits on its own, so those stay done."""
    try:
        yield
    except MigrationError as error:
        with contextlib.suppress(UaipDbError):
            now = applied.current_revisions(database)
            if now != before:
                error.args = (f"{error}\nNow at {history.load().describe_current(now)}.",)
        raise


@dataclass
class _Read:
    """What the migration connection reads after the last revision (no other connection)."""

    current: tuple[str, ...] = ()
    invalid: tuple[str, ...] = ()
    schema: Snapshot | None = None

    def __call__(self, conn: psycopg.Connection[Any]) -> None:
        self.current = applied.current_revisions_on(conn)
        self.invalid = tuple(pg.invalid_indexes(conn))
        self.schema = take_from(conn)


def apply_upgrade(
    plan: UpgradePlan,
    *,
    backup_asked: bool = False,
    take_backup: TakeBackup | None = None,
    lock_wait: float = DEFAULT_WAIT_SECONDS,
    report: Report | None = None,
    lock_connection: psycopg.Connection[Any] | None = None,
    on_migrating: Callable[[], None] | None = None,
    command: str = "db.upgrade",
    locks: LockRecorder | None = None,
) -> Outcome:
    """Upgrade as planned: the verified backup first where required, the runner (its lock,
    timeouts, one transaction per revision), then the refusals of what it left. A handed
    `lock_connection` (the plan's) is read from, then becomes the lock's, and is closed.
    `on_migrating` is called once the backup is done and the migrations start; `locks` records
    each statement's relation locks (a rehearsal)."""
    say = report or _silent
    database = plan.database
    started = time.perf_counter()
    conn = lock_connection
    try:
        if conn is None:
            conn = pg.connect(database)
        before = take_from(conn)  # what differed before the upgrade is not the upgrade's
        if backup_reason(database, backup_asked):
            conn.close()  # a backup takes minutes; the lock gets a fresh connection
            conn = None
        backed_up = _backup_first(database, "upgrade", backup_asked, take_backup, say)
        say(f"Upgrading {database.display_url()} to {plan.revision}:")
        if on_migrating is not None:
            on_migrating()
        read = _Read()
        migration = time.perf_counter()
        with saying_where_it_stopped(database, plan.current):
            handed, conn = conn, None
            runner.upgrade(
                database,
                plan.revision,
                lock_wait=lock_wait,
                report=report,
                lock_connection=handed,
                after=read,
                locks=locks,
            )
        say(f"Upgrade finished in {time.perf_counter() - migration:.2f} s.")
    finally:
        if conn is not None:
            conn.close()
    refuse_invalid_indexes(read.invalid, command)
    still = {item.revision for item in history.load().pending(read.current)}
    ran = tuple(revision for revision in plan.pending if revision not in still)
    return _verified("upgrade", plan.current, before, read, ran, backed_up, started, say)


def apply_downgrade(
    plan: DowngradePlan,
    *,
    backup_asked: bool = False,
    take_backup: TakeBackup | None = None,
    lock_wait: float = DEFAULT_WAIT_SECONDS,
    report: Report | None = None,
) -> Outcome:
    """Downgrade as planned (and confirmed by the caller): the verified backup first where
    required; under the lock, the plan checked again (another runner may have moved the
    database meanwhile), the runner, then the schema reached checked."""
    say = report or _silent
    database = plan.database
    started = time.perf_counter()
    backed_up = _backup_first(database, "downgrade", backup_asked, take_backup, say)
    read = _Read()
    with runner.hold_lock(database, lock_wait, report):
        with pg.reading(database) as conn:
            before = applied.current_revisions_on(conn)
            schema = take_from(conn)  # what differed before the downgrade is not its doing
        if history.load().downgrade_plan(before, plan.revision) != plan.steps:
            raise UsageError(
                "The database changed while this downgrade waited (another runner migrated "
                "it); nothing was reverted. Check `inv db.current` and run it again."
            )
        migration = time.perf_counter()
        with saying_where_it_stopped(database, before):
            # The resolved target: Alembic cannot walk "-N" through a merge by itself.
            runner.downgrade(
                database,
                plan.target,
                lock_wait=lock_wait,
                report=report,
                lock_held=True,
                after=read,
            )
        say(f"Downgrade finished in {time.perf_counter() - migration:.2f} s.")
    ran = tuple(item.revision for item in plan.steps.reverted)
    return _verified("downgrade", before, schema, read, ran, backed_up, started, say)


def _verified(
    step: str,
    start: tuple[str, ...],
    before: Snapshot,
    read: _Read,
    ran: tuple[str, ...],
    backed_up: bool,
    started: float,
    say: Report,
) -> Outcome:
    """After a migration, the schema it left must be the committed snapshot of the revision it
    reached: a downgrade() that forgot what its upgrade() made fails here, not at db.verify."""
    assert read.schema is not None
    say(f"Now at {history.load().describe_current(read.current)}.")
    found = reached(read.current, read.schema, start, before)
    notes: tuple[str, ...] = ()
    if found.not_compared:
        notes = (f"Not compared with a committed snapshot: {found.not_compared}",)
    elif found.differences:
        raise CheckFailed(
            f"The {step} reached revision {found.revision}, but the schema is not its committed "
            f"snapshot ({len(found.differences)} difference(s): {found.first()}).\n"
            f"The {step}() of {', '.join(ran) or 'nothing'} does not do what the snapshots "
            "say (or the schema differed before); `inv db.verify` lists it all."
        )
    elif found.earlier:
        notes = (
            f"The schema still differs from revision {found.revision}'s snapshot as it did "
            f"before ({found.earlier} difference(s)); `inv db.verify` lists them.",
        )
    for note in notes:
        say(note)
    return Outcome(start, read.current, ran, found, backed_up, time.perf_counter() - started, notes)


def upgrade_copy(
    copy: DatabaseConfig, revision: str, report: Report, locks: LockRecorder | None
) -> None:
    """Upgrade a throwaway copy (a rehearsal's) to `revision` the way db.upgrade does (plan,
    runner, the refusals and the schema check after it), without a backup: it is a copy, not
    the production database, whatever DB_ENV says."""
    copy = dataclasses.replace(copy, env="development")
    with pg.connection(copy) as conn:
        plan = plan_upgrade(conn, copy, revision, command="db.rehearse")
    if not plan.nothing_to_do:
        apply_upgrade(plan, report=report, locks=locks, command="db.rehearse")
