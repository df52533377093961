"""`inv db.upgrade`, `db.downgrade`, `db.current`, `db.history`, `db.revision`, `db.stamp`,
`db.seed`: moving a database between revisions, and saying where it is."""

from __future__ import annotations

import io
import json
import re
import sys
from dataclasses import asdict
from typing import TextIO, cast

from uaip_db import pg
from uaip_db.cli import backups
from uaip_db.cli.confirm import confirm_destructive
from uaip_db.cli.reporter import Say, VisibleStream, complain, say, timed
from uaip_db.errors import ConnectionProblem, UaipDbError, UsageError
from uaip_db.migrations import applied, history, ledger, runner
from uaip_db.migrations.lock import DEFAULT_WAIT_SECONDS
from uaip_db.operations import (
    apply_downgrade,
    apply_upgrade,
    plan_downgrade,
    plan_upgrade,
    wanted_revisions,
)
from uaip_db.settings import DatabaseConfig

# What docs/MIGRATIONS.md section 4 walks through after `inv db.revision`.
NEXT_STEPS = (
    "write upgrade() and downgrade() (and comments on new tables and columns)",
    "inv db.upgrade && inv db.downgrade --yes && inv db.upgrade",
    "inv db.snapshots && inv db.docs      (commit both with the revision)",
    "inv db.lint && inv db.roundtrip && inv db.check",
)


def describe_current(current: tuple[str, ...]) -> str:
    return history.load().describe_current(current)


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
        runner.upgrade(config, known_range(sql_range(config, revision)), sql=True)
        return
    # The common case, a database already at head, costs one query and no Alembic import.
    wanted_revisions(history.load(), revision)  # an unknown one is named before anything is done
    conn = pg.connect(config)
    try:
        plan = plan_upgrade(conn, config, revision)
    except BaseException:
        conn.close()
        raise
    if plan.nothing_to_do:
        conn.close()
        at = "at head" if revision in ("head", "heads") else "at"
        out(f"{config.display_url()} is {at} {describe_current(plan.current)}; nothing to do.")
        return
    apply_upgrade(  # reads on the plan's connection, which then holds the migration lock
        plan,
        backup_asked=backup_first,
        take_backup=lambda _database: backups.backup(out=out),
        lock_wait=lock_wait,
        report=out,
        lock_connection=conn,
    )


def known_range(text: str) -> str:
    """`text` (`FROM:TO` or `TO`) when the scripts know both ends: refused before a line of SQL
    is written, so a piped script never gets half a file."""
    index = history.load()
    for end in text.split(":"):
        index.resolve(end)
    return text


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
        runner.downgrade(config, known_range(revision), sql=True)
        return
    plan = plan_downgrade(config, revision, report=out)
    if plan.needs_confirmation:
        action = "drop data in" if plan.drops_data else "downgrade"
        confirm_destructive(config, action, yes=yes, confirm_db=confirm_db)
    apply_downgrade(
        plan,
        backup_asked=backup_first,
        take_backup=lambda _database: backups.backup(out=out),
        lock_wait=lock_wait,
        report=out,
    )


def current(*, as_json: bool = False, out: Say = say) -> None:
    config = DatabaseConfig.from_env()
    if as_json:
        from uaip_db.checks.status import database_state  # noqa: PLC0415 (this task's own: `inv --list` does not load it)

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
    from uaip_db.migrations import releases as named  # noqa: PLC0415 (this task's own: `inv --list` does not load it)

    index = history.load()
    listed = named.load()
    current, phases, unread = recorded_revisions_and_phases()
    at = current[0] if len(current) == 1 else None
    fits = [named.fit(release, at, index, phases) for release in listed] if at else []
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
                    "error": str(unread) if unread else None,
                },
                indent=2,
            )
        )
        if unread:
            raise unread
        return
    if not listed:
        out(f"No releases are named yet ({named.releases_path()}).")
        return
    out(f"Releases ({named.releases_path()}), oldest first:")
    for release in listed:
        item = index.get(release.revision)
        out(f"  {release.version}: {release.revision} ({item.doc if item else '?'})")
    if unread:
        raise unread  # the releases are listed; which may run there is what could not be said
    if at is None:
        recorded = ", ".join(current) or "none"
        out(
            f"{DatabaseConfig.from_env().display_url()} records no single revision "
            f"(recorded: {recorded}), so no release is said to run on it."
        )
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


def recorded_revisions_and_phases() -> tuple[
    tuple[str, ...], dict[str, str | None], UaipDbError | None
]:
    """What the configured database records, and the phase its ledger keeps for each applied
    revision; when it cannot be asked, nothing and why."""
    try:
        with pg.reading(DatabaseConfig.from_env()) as conn:
            current = applied.current_revisions_on(conn)
            return current, {r: e.phase for r, e in ledger.entries(conn).items()}, None
    except UaipDbError as error:
        return (), {}, error


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
    from uaip_db.catalog.snapshot import take  # noqa: PLC0415 (this task's own: `inv --list` does not load it)
    from uaip_db.checks.verify import decide_stamp  # noqa: PLC0415 (this task's own: `inv --list` does not load it)

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
    from uaip_db.migrations.baseline import BASELINE_REVISION  # noqa: PLC0415 (this task's own: `inv --list` does not load it)
    from uaip_db.migrations.baseline import seed as load_init_sql  # noqa: PLC0415 (this task's own: `inv --list` does not load it)

    config = DatabaseConfig.from_env()
    with timed(f"Loaded database/init.sql (schema v1.0.0) into {config.display_url()}", out):
        load_init_sql(config)
    out(f"Bring it to head with: inv db.stamp --rev {BASELINE_REVISION} db.upgrade")
