"""The stairway round trip: for every revision, up, down, up again, proving schema and rows survive.

For each revision in order, on a throwaway database: fill every table with rows, take the
schema snapshot and per-table hashes, upgrade, snapshot, downgrade one step (the schema must
equal the one before, the rows must be unchanged unless the revision declares it destroys them
with `destroys_data_on_downgrade`), upgrade again (the schema must equal the first upgrade's).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uaip_db.catalog.snapshot import Snapshot, describe, diff, take_from
from uaip_db.checks import sample_data
from uaip_db.checks.data_loss import (
    LostObjects,
    committed_losses,
    count_losses,
    lost_objects,
    undeclared,
)
from uaip_db.errors import RoundtripFailed
from uaip_db.migrations import history
from uaip_db.migrations.session import MigrationSession
from uaip_db.pg import connection

if TYPE_CHECKING:
    from uaip_db.servers.scratch import ScratchServer


@dataclass
class StepTimes:
    revision: str
    up: float
    down: float
    up_again: float
    checks: float

    merge: bool = False
    # What the upgrade drops, as its revision declares (destroys_data): reported, not failed.
    dropped: tuple[str, ...] = ()

    def line(self) -> str:
        if self.merge:
            return f"  {self.revision}  merge: up {self.up:.2f} s, checks {self.checks:.2f} s"
        drops = f"; the upgrade drops {', '.join(self.dropped)} (declared)" if self.dropped else ""
        return (
            f"  {self.revision}  up {self.up:.2f} s, down {self.down:.2f} s, "
            f"up again {self.up_again:.2f} s, checks {self.checks:.2f} s{drops}"
        )


@dataclass
class State:
    schema: Snapshot
    columns: dict[str, list[str]]
    rows: dict[str, sample_data.TableRows]


def observe(
    conn: Any, columns: dict[str, list[str]] | None = None, schema: Snapshot | None = None
) -> State:
    """The schema (`schema` when the caller knows it has not changed), columns and row hashes."""
    return State(
        schema or take_from(conn),
        sample_data.columns_of(conn),
        sample_data.table_hashes(conn, columns),
    )


def committed_drops(script: history.Revision) -> LostObjects:
    """What the revision's upgrade drops, read from the committed snapshots before it runs (so
    the rows are hashed without it); nothing when a snapshot is not there yet."""
    return committed_losses(script.parent, script.revision) or LostObjects([], [])


def without(columns: dict[str, list[str]], drops: LostObjects) -> dict[str, list[str]]:
    """`columns` less the tables and columns `drops` names."""
    gone = set(drops.columns)
    return {
        table: [column for column in names if f"{table}.{column}" not in gone]
        for table, names in columns.items()
        if table not in drops.tables
    }


def _fail(script: history.Revision, what: str, lines: list[str]) -> RoundtripFailed:
    return RoundtripFailed(
        f"Round trip failed at revision {script.revision} ({script.doc}): {what}:\n"
        + describe(lines)
    )


def check_revision(
    conn: Any,
    session: MigrationSession,
    script: history.Revision,
    previous: str,
    schema: Snapshot | None = None,
) -> tuple[StepTimes, Snapshot]:
    """Up, down, up for one revision; raise RoundtripFailed naming it when anything is off.

    `conn` is an idle autocommit connection used for the checks; `session` migrates; `schema`
    is the database's schema when the caller has it (filling rows leaves it as it is). Returns
    the times and the schema at the revision.
    """
    checks = 0.0

    def checked(action: Callable[[], Any]) -> Any:
        nonlocal checks
        started = time.perf_counter()
        result = action()
        checks += time.perf_counter() - started
        return result

    def timed(action: Callable[[], None]) -> float:
        started = time.perf_counter()
        action()
        return time.perf_counter() - started

    def filled(schema: Snapshot | None, drops: LostObjects | None = None) -> State:
        sample_data.fill(conn)
        if not drops:
            return observe(conn, schema=schema)
        return observe(conn, without(sample_data.columns_of(conn), drops), schema)

    # What a contract step drops is not compared; what it keeps must hold the same rows.
    drops = committed_drops(script)
    before: State = checked(lambda: filled(schema, drops))
    kept = without(before.columns, drops)
    up = timed(lambda: session.upgrade(script.revision))
    after: State = checked(lambda: observe(conn, kept))
    dropped = lost_objects(before.schema, after.schema)
    if dropped and not script.destroys_data:
        raise _fail(
            script,
            "the upgrade drops data the revision does not declare "
            '(say why in destroys_data = "...")',
            dropped.names(),
        )
    changed = sample_data.changed_tables(before.rows, after.rows)
    if changed:
        raise _fail(script, "the upgrade changed existing rows", changed)

    # Rows in what the revision created too, so that a downgrade dropping them is seen.
    refilled: State = checked(lambda: filled(after.schema))
    lost = lost_objects(refilled.schema, before.schema)
    surviving = {
        table: [c for c in columns if c in before.columns.get(table, [])]
        for table, columns in refilled.columns.items()
        if table in before.columns
    }
    kept_rows = checked(lambda: sample_data.table_hashes(conn, surviving))
    losses = checked(lambda: count_losses(conn, lost))

    down = timed(lambda: session.downgrade(previous))
    back: State = checked(lambda: observe(conn, surviving))
    differences = diff(before.schema, back.schema)
    if differences:
        raise _fail(script, "the downgrade did not restore the schema", differences)
    changed = sample_data.changed_tables(kept_rows, back.rows)
    if changed:
        raise _fail(script, "the downgrade lost or changed rows it does not declare", changed)
    unnamed = undeclared(losses, script.destroys_data_on_downgrade)
    if unnamed:
        raise _fail(
            script,
            "the downgrade drops data the revision does not declare "
            "(name it in destroys_data_on_downgrade)",
            [loss.line() for loss in unnamed],
        )

    up_again = timed(lambda: session.upgrade(script.revision))
    again: Snapshot = checked(lambda: take_from(conn))
    differences = diff(after.schema, again)
    if differences:
        raise _fail(script, "upgrading again built a different schema", differences)
    return (
        StepTimes(script.revision, up, down, up_again, checks, dropped=tuple(dropped.names())),
        again,
    )


def check_merge(conn: Any, session: MigrationSession, script: history.Revision) -> StepTimes:
    """A merge joins heads: it is applied (with any branch revision it needs) and must leave the
    rows that were there alone. Alembic cannot walk down through it to one parent, so it is not
    reverted; its parents were each round-tripped on their own."""
    started = time.perf_counter()
    sample_data.fill(conn)
    before = observe(conn)
    checks = time.perf_counter() - started
    started = time.perf_counter()
    session.upgrade(script.revision)
    up = time.perf_counter() - started
    started = time.perf_counter()
    after = observe(conn, before.columns)
    checks += time.perf_counter() - started
    changed = sample_data.changed_tables(before.rows, after.rows)
    if changed:
        raise _fail(script, "the merge changed existing rows", changed)
    return StepTimes(script.revision, up, 0.0, 0.0, checks, merge=True)


def run(server: ScratchServer, report: Callable[[str], None] | None = None) -> list[StepTimes]:
    """Round-trip every revision on a new throwaway database; raise RoundtripFailed on the first."""
    database = server.create_database("uaip_roundtrip")
    try:
        times = []
        with MigrationSession(database) as session, connection(database) as conn:
            at: tuple[str | None, Snapshot | None] = (None, None)
            for script in history.load().order:
                if script.is_merge:
                    step = check_merge(conn, session, script)
                    at = (None, None)
                else:
                    moved = session.start_from(script.parent)
                    known = at[1] if at[0] == script.parent and not moved else None
                    step, schema = check_revision(conn, session, script, script.parent, known)
                    at = (script.revision, schema)
                times.append(step)
                if report:
                    report(step.line())
        return times
    finally:
        server.drop_database(database.name)
