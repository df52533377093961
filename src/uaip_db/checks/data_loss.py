"""What a schema change destroys, computed from the schemas and the rows, never from a marker.

Going from one schema to another loses every table that disappears and every column that
disappears from a table that stays. `lost_objects` finds them from two catalog snapshots (live or
committed); `count_losses` counts what they hold in a live database, so a downgrade can list the
tables and columns it would empty with their row counts, and a round trip can tell an
undeclared loss from a declared one. Revision markers (`destroys_data_on_downgrade`) stay the
author's declaration, checked against this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uaip_db.catalog import expected
from uaip_db.catalog.snapshot import Snapshot, take_from
from uaip_db.docs.model import split_owner
from uaip_db.migrations import applied
from uaip_db.pg import connection
from uaip_db.settings import DatabaseConfig

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True)
class LostObjects:
    tables: list[str]  # tables that disappear
    columns: list[str]  # "table.column" of columns that disappear from tables that stay

    def __bool__(self) -> bool:
        return bool(self.tables or self.columns)

    def names(self) -> list[str]:
        return [*self.tables, *self.columns]


@dataclass(frozen=True)
class DataLoss:
    """One table or column that would be dropped while it holds data."""

    target: str  # "users" or "stage_data.reviewer_note"
    rows: int  # rows of the table, or rows with a value in the column

    def line(self) -> str:
        what = "row(s)" if "." not in self.target else "row(s) with a value"
        return f"{self.target}: {self.rows} {what}"


def lost_objects(before: Snapshot, after: Snapshot) -> LostObjects:
    """The tables and columns of `before` that `after` no longer has."""
    old_tables, new_tables = before.tables(), after.tables()
    old_columns, new_columns = before.of_kind("column"), after.of_kind("column")
    tables = sorted(old_tables - new_tables)
    dropped_tables = set(tables)
    columns = sorted(
        name
        for name in old_columns.keys() - new_columns.keys()
        if split_owner(name, old_tables)[0] not in dropped_tables
    )
    return LostObjects(tables, columns)


def undeclared(losses: list[DataLoss], declaration: str | None) -> list[DataLoss]:
    """The losses a `destroys_data_on_downgrade` marker does not cover.

    The marker names tables and `table.column`s, comma-separated; a table covers its columns.
    A marker that names none of the lost objects is prose covering the whole downgrade
    ("every UAIP table", in the frozen baseline revision).
    """
    if not declaration:
        return list(losses)
    named = {part.strip() for part in declaration.split(",") if part.strip()}
    lost = {loss.target for loss in losses} | {loss.target.split(".")[0] for loss in losses}
    if not named & lost:
        return []
    return [
        loss
        for loss in losses
        if loss.target not in named and loss.target.split(".")[0] not in named
    ]


def count_losses(conn: psycopg.Connection[Any], lost: LostObjects) -> list[DataLoss]:
    """What the lost objects hold in the database `conn` is connected to; empty ones left out."""
    from psycopg import sql  # noqa: PLC0415

    found: list[DataLoss] = []
    for table in lost.tables:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_qualified(table))).fetchone()
        if row and row[0]:
            found.append(DataLoss(table, int(row[0])))
    tables = set(lost.tables) | {name.rpartition(".")[0] for name in lost.columns}
    for name in lost.columns:
        table, column = split_owner(name, tables)
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE {} IS NOT NULL").format(
                _qualified(table), sql.Identifier(column)
            )
        ).fetchone()
        if row and row[0]:
            found.append(DataLoss(name, int(row[0])))
    return found


def downgrade_losses(database: DatabaseConfig, target: str) -> list[DataLoss] | None:
    """What going from the live schema to revision `target`'s committed one would empty; None
    when there is no committed snapshot of `target` to tell."""
    wanted = expected.committed(target)
    if wanted is None:
        return None
    with connection(database) as conn:
        # Counting waits for no long lock: a writer-blocking DDL elsewhere makes it fail clearly.
        conn.execute("SET lock_timeout = '5s'")
        lost = lost_objects(take_from(conn), wanted)
        return count_losses(conn, only_what_the_revisions_drop(conn, lost, target))


def committed_losses(start: str, end: str) -> LostObjects | None:
    """What going from revision `start` to revision `end` drops, by their committed snapshots;
    None when either has none yet."""
    before, after = expected.committed(start), expected.committed(end)
    return None if before is None or after is None else lost_objects(before, after)


def only_what_the_revisions_drop(
    conn: psycopg.Connection[Any], lost: LostObjects, target: str
) -> LostObjects:
    """Of what the live schema has and revision `target` has not, what the revisions between
    them drop: a table made by hand, which no downgrade touches, is not theirs to count. The
    live schema alone decides when the recorded revision's committed snapshot is not there."""
    current = applied.current_revisions_on(conn)
    theirs = committed_losses(current[0], target) if len(current) == 1 else None
    if theirs is None:
        return lost
    return LostObjects(
        [table for table in lost.tables if table in theirs.tables],
        [column for column in lost.columns if column in theirs.columns],
    )


def _qualified(table: str) -> Any:
    """A snapshot's table name (`sessions`, or `schema.table` outside public) as an identifier."""
    from psycopg import sql  # noqa: PLC0415

    schema, dot, name = table.partition(".")
    return sql.Identifier(schema, name) if dot else sql.Identifier("public", table)
