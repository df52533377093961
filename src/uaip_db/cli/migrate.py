"""`inv db.upgrade`, `db.downgrade`, `db.current`, `db.history`, `db.revision`, `db.stamp`,
`db.seed`: moving a database between revisions, and saying where it is."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TextIO, cast

from uaip_db import pg
from uaip_db.catalog import expected
from uaip_db.catalog.snapshot import Snapshot, take_from
from uaip_db.checks.verify import Reached, reached
from uaip_db.cli.confirm import confirm_destructive
from uaip_db.cli.reporter import Say, VisibleStream, complain, say, timed
from uaip_db.errors import CheckFailed, ConnectionProblem, MigrationError, UaipDbError, UsageError
from uaip_db.migrations import applied, history, runner
from uaip_db.migrations.lock import DEFAULT_WAIT_SECONDS
from uaip_db.pg import invalid_indexes
from uaip_db.settings import DatabaseConfig

if TYPE_CHECKING:
    import psycopg

# What docs/MIGRATIONS.md section 4 walks through after `inv db.revision`.
NEXT_STEPS = (
    "write upgrade() and downgrade() (and comments on new tables and columns)",
    "inv db.upgrade && inv db.downgrade --yes && inv db.upgrade",
    "inv db.snapshots && inv db.docs      (commit both with the revision)",
    "inv db.lint && inv db.roundtrip && inv db.check",
)


def describe_current(current: tuple[str, ...]) -> str:
    return history.load().describe_current(current)


@contextlib.contextmanager
def saying_where_it_stopped(config: DatabaseConfig, before: tuple[str, ...]) -> Iterator[None]:
    """A migration that fails after other revisions went through names where the database is
    now: each revision commits on its own, so those stay done."""
    try:
        yield
    except MigrationError as error:
        with contextlib.suppress(UaipDbError):
            now = applied.current_revisions(config)
            if now != before:
                error.args = (f"{error}\nNow at {describe_current(now)}.",)
        raise


def upgrade(
    revision: str = "head",
    *,
    sql: bool = False,
    lock_wait: float = DEFAULT_WAIT_SECONDS,
    backup_first: bool = False,
    out: Say = say,
) -> None:
    config = DatabaseConfig.from_env()
    if not revision.strip():
        raise UsageError("--rev needs a revision: head (the default), an id or a prefix of one.")
    if revision == "base" or revision.startswith("-"):
        raise UsageError(
            f"db.upgrade goes up; to go to {revision}, use `inv db.downgrade --rev {revision}`."
        )
    if sql:
        runner.upgrade(config, sql_range(config, revision), sql=True)
        return
    # The common case, a database already at head, costs one query and no Alembic import.
    index = history.load()
    if not any(mark in revision for mark in "+@:") and revision != "heads":
        index.resolve(revision)  # an unknown one is named before anything is said or done
    conn = pg.connect(config)
    try:
        current = applied.current_revisions_on(conn)
        invalid = invalid_indexes(conn)
        before: Snapshot | None = None
        for recorded in current:
            if index.get(recorded) is None:
                raise history.unknown_revision(recorded)
        if revision in ("head", "heads") and index.is_at_head(current):
            refuse_invalid_indexes(invalid)
            out(
                f"{config.display_url()} is at head {index.describe_current(current)}; "
                "nothing to do."
            )
            return
        before = take_from(conn)  # what differed before the upgrade is not the upgrade's
        if backup_first or config.is_production:
            conn.close()  # a backup takes minutes; the lock gets a fresh connection
        from uaip_db.cli.backups import take_backup_first

        take_backup_first(config, backup_first, out)
        out(f"Upgrading {config.display_url()} to {revision}:")
        outcome: dict[str, Any] = {}

        def read_outcome(migrated: psycopg.Connection[Any]) -> None:
            outcome["current"] = applied.current_revisions_on(migrated)
            outcome["invalid"] = invalid_indexes(migrated)
            outcome["schema"] = take_from(migrated)

        with timed("Upgrade finished", out), saying_where_it_stopped(config, current):
            runner.upgrade(
                config,
                revision,
                lock_wait=lock_wait,
                report=out,
                lock_connection=conn,
                after=read_outcome,
            )
    finally:
        conn.close()
    refuse_invalid_indexes(outcome["invalid"])
    out(f"Now at {describe_current(outcome['current'])}.")
    pending_after = {item.revision for item in index.pending(outcome["current"])}
    ran = [item.revision for item in index.pending(current) if item.revision not in pending_after]
    found = reached(outcome["current"], outcome["schema"], current, before)
    refuse_another_schema(found, "upgrade", ran, out)


def refuse_another_schema(found: Reached, step: str, revisions: list[str], out: Say) -> None:
    """After a migration, the schema it left must be the committed snapshot of the revision it
    reached: a downgrade() that forgot what its upgrade() made fails here, not at db.verify."""
    if found.not_compared:
        out(f"Not compared with a committed snapshot: {found.not_compared}")
    elif found.differences:
        raise CheckFailed(
            f"The {step} reached revision {found.revision}, but the schema is not its committed "
            f"snapshot ({len(found.differences)} difference(s): {found.first()}).\n"
            f"The {step}() of {', '.join(revisions) or 'nothing'} does not do what the snapshots "
            "say (or the schema differed before); `inv db.verify` lists it all."
        )
    elif found.earlier:
        out(
            f"The schema still differs from revision {found.revision}'s snapshot as it did "
            f"before ({found.earlier} difference(s)); `inv db.verify` lists them."
        )


def refuse_invalid_indexes(invalid: list[str]) -> None:
    """An INVALID index (a CONCURRENTLY step that failed half-way) is never "nothing to do"."""
    if invalid:
        raise CheckFailed(
            f"Index {', '.join(invalid)} is INVALID (a CONCURRENTLY build or drop failed "
            "half-way): drop it with DROP INDEX CONCURRENTLY and run `inv db.upgrade` again, or "
            "rebuild it with REINDEX INDEX CONCURRENTLY."
        )


def sql_range(config: DatabaseConfig, revision: str) -> str:
    """What `db.upgrade --sql` renders: `FROM:TO` as given (`current` is the database's revision),
    else from where the database is to `revision`; from base when the database cannot be read."""
    start, colon, end = revision.rpartition(":")
    if colon and start != "current":
        return revision
    end = end or "head"
    try:
        current = applied.current_revisions(config)
    except ConnectionProblem as problem:
        complain(f"-- {problem} Rendering the SQL from base instead.")
        return end
    if len(current) > 1:
        raise UsageError("The database has several heads applied; give the range: --rev FROM:TO.")
    if not current:
        return end
    complain(f"-- {config.where()} is at {current[0]}; the SQL from there to {end}:")
    return f"{current[0]}:{end}"


def downgrade(
    revision: str = "-1",
    *,
    yes: bool = False,
    confirm_db: str | None = None,
    sql: bool = False,
    lock_wait: float = DEFAULT_WAIT_SECONDS,
    backup_first: bool = False,
    out: Say = say,
) -> None:
    config = DatabaseConfig.from_env()
    if not revision.strip():
        raise UsageError("--rev needs a target: -1 (the default), -N, a revision id, or base.")
    if sql:
        if ":" not in revision:
            raise UsageError(
                "Offline SQL needs both ends of the downgrade: --rev FROM:TO "
                "(e.g. --rev b41d9e0c7f25:8f2b6c1d4e7a)."
            )
        runner.downgrade(config, revision, sql=True)
        return
    index = history.load()
    plan = index.downgrade_plan(applied.current_revisions(config), revision)
    target = plan.target
    out(f"Downgrading {config.display_url()} by {len(plan.reverted)} revision(s):")
    for item in plan.reverted:
        loss = item.destroys_data_on_downgrade
        out(f"  {item.revision} {item.doc}" + (f"  [drops {loss}]" if loss else ""))
    out("  counting the rows it would drop...")
    from uaip_db.checks.data_loss import downgrade_losses

    losses = downgrade_losses(config, target)
    if losses is None:
        out(f"  No committed snapshot of {target} tells what this drops; treating it as data loss.")
    for lost in losses or []:
        out(f"  would drop {lost.line()}")
    declared = any(item.destroys_data_on_downgrade for item in plan.reverted)
    if losses is None or losses or declared or revision == expected.BASE or config.is_production:
        drops = losses is None or bool(losses) or declared or revision == expected.BASE
        confirm_destructive(
            config, "drop data in" if drops else "downgrade", yes=yes, confirm_db=confirm_db
        )
    from uaip_db.cli.backups import take_backup_first

    take_backup_first(config, backup_first, out)
    with runner.hold_lock(config, lock_wait, out):
        # Another runner may have moved the database while we asked; the plan must still hold.
        with pg.reading(config) as conn:
            before = applied.current_revisions_on(conn)
            schema = take_from(conn)  # what differed before the downgrade is not its doing
        replanned = index.downgrade_plan(before, revision)
        if replanned != plan:
            raise UsageError(
                "The database changed while this downgrade waited (another runner migrated "
                "it); nothing was reverted. Check `inv db.current` and run it again."
            )
        outcome: dict[str, Any] = {}

        def read_outcome(migrated: psycopg.Connection[Any]) -> None:
            outcome["current"] = applied.current_revisions_on(migrated)
            outcome["schema"] = take_from(migrated)

        with timed("Downgrade finished", out), saying_where_it_stopped(config, before):
            # The resolved target: Alembic cannot walk "-N" through a merge by itself.
            runner.downgrade(
                config, target, lock_wait=lock_wait, report=out, lock_held=True, after=read_outcome
            )
    out(f"Now at {describe_current(outcome['current'])}.")
    reverted = [item.revision for item in plan.reverted]
    found = reached(outcome["current"], outcome["schema"], before, schema)
    refuse_another_schema(found, "downgrade", reverted, out)


def current(*, as_json: bool = False, out: Say = say) -> None:
    config = DatabaseConfig.from_env()
    if as_json:
        from uaip_db.checks.status import database_state

        state = database_state(config)
        if not state.reachable:
            raise ConnectionProblem(state.error or "The database cannot be reached.")
        out(state.to_json())
        return
    out(describe_current(applied.current_revisions(config)))


def show_history(verbose: bool = False, *, as_json: bool = False, out: Say = say) -> None:
    index = history.load()  # a revision file that cannot load is one line, not a traceback
    current = recorded_revisions()
    if as_json:
        out(
            json.dumps(
                [
                    {
                        **asdict(item),
                        "head": item.revision in index.heads,
                        "current": item.revision in current,
                    }
                    for item in reversed(index.order)
                ],
                indent=2,
            )
        )
        return
    # Alembic writes docstrings as they are: through VisibleStream, an escape in one is shown.
    written = io.StringIO()
    runner.show_history(cast(TextIO, written), verbose=verbose)
    stream = VisibleStream(sys.stdout)
    for line in written.getvalue().splitlines(keepends=True):
        stream.write(mark_current(line, current))
    stream.flush()


def releases(*, as_json: bool = False, out: Say = say) -> None:
    """The application's releases and, for the configured database, which may run on it."""
    from uaip_db.migrations import releases as named

    index = history.load()
    listed = named.load()
    current = recorded_revisions()
    at = current[0] if len(current) == 1 else None
    fits = [named.fit(release, at, index) for release in listed] if at else []
    if as_json:
        out(
            json.dumps(
                {
                    "releases": [asdict(release) for release in listed],
                    "database": DatabaseConfig.from_env().display_url(),
                    "current": list(current),
                    "runs": [
                        asdict(fit.release) | {"runs": fit.runs, "why": fit.why} for fit in fits
                    ],
                },
                indent=2,
            )
        )
        return
    if not listed:
        out(f"No releases are named yet ({named.releases_path()}).")
        return
    out(f"Releases ({named.releases_path()}), oldest first:")
    for release in listed:
        item = index.get(release.revision)
        out(f"  {release.version}: {release.revision} ({item.doc if item else '?'})")
    if at is None:
        out("The configured database could not be read (or records no single revision).")
        return
    out(f"On {DatabaseConfig.from_env().display_url()} (at {at}):")
    for fit in fits:
        out(f"  {fit.line()}")


def recorded_revisions() -> tuple[str, ...]:
    """What the configured database records, or nothing when it cannot be asked: the history is
    the scripts', and shows without a database."""
    try:
        return applied.current_revisions(DatabaseConfig.from_env())
    except UaipDbError:
        return ()


def mark_current(line: str, current: tuple[str, ...]) -> str:
    """Alembic's history line of a recorded revision, marked `(current)` as its own
    `--indicate-current` does (`a -> b (head), doc`, or `Rev: b (head)` when verbose)."""
    for revision in current:
        found = re.match(
            rf"(.*(?:-> |Rev: ){re.escape(revision)}(?: \([^)]*\))*)(.*)", line, re.DOTALL
        )
        if found:
            return f"{found.group(1)} (current){found.group(2)}"
    return line


def new_revision(message: str, out: Say = say) -> None:
    history.load().single_head()  # the new file goes on top of the one head
    script = runner.new_revision(message)
    out(f"Wrote {script.path} (revision {script.revision}, after {script.down_revision}).")
    out("Next (docs/MIGRATIONS.md, section 4):")
    for step in NEXT_STEPS:
        out(f"  {step}")


def stamp(
    revision: str,
    *,
    force: bool = False,
    yes: bool = False,
    confirm_db: str | None = None,
    lock_wait: float = DEFAULT_WAIT_SECONDS,
    out: Say = say,
) -> None:
    """Record a revision, after checking that the schema really is that revision's."""
    from uaip_db.catalog.snapshot import take
    from uaip_db.checks.verify import decide_stamp

    if not revision:
        raise UsageError("Say which revision to record: inv db.stamp --rev REVISION (or auto).")
    config = DatabaseConfig.from_env()
    decision = decide_stamp(take(config), revision, force=force)
    if decision.identified:
        out(f"The schema matches revision {history.load().describe(decision.revision)}.")
    if decision.differences:
        out(f"Stamping despite {len(decision.differences)} difference(s), as --force asks.")
    if config.is_production:
        confirm_destructive(
            config, f"record revision {decision.revision} in", yes=yes, confirm_db=confirm_db
        )
    with runner.hold_lock(config, lock_wait, out):
        # Another runner may have migrated while we checked or asked: check again under the lock.
        if decide_stamp(take(config), revision, force=force) != decision:
            raise UsageError(
                "The schema changed while this stamp waited (another runner migrated it); "
                "nothing was recorded. Check `inv db.current` and run it again."
            )
        runner.stamp(config, decision.revision, lock_wait=lock_wait, lock_held=True)
    out(
        f"Recorded {describe_current(applied.current_revisions(config))} "
        f"in {config.display_url()}; no schema objects were changed."
    )


def seed(out: Say = say) -> None:
    from uaip_db.migrations.baseline import BASELINE_REVISION
    from uaip_db.migrations.baseline import seed as load_init_sql

    config = DatabaseConfig.from_env()
    with timed(f"Loaded database/init.sql (schema v1.0.0) into {config.display_url()}", out):
        load_init_sql(config)
    out(f"Bring it to head with: inv db.stamp --rev {BASELINE_REVISION} db.upgrade")
