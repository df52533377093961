"""Building blocks for revisions that must be safe to run again and never block writers."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from uaip_db.dual_write import (
    change_type_contract,
    change_type_contract_undo,
    change_type_expand,
    change_type_expand_undo,
    dual_write_name,
    rename_column_contract,
    rename_column_contract_undo,
    rename_column_expand,
    rename_column_expand_undo,
    shadow_column,
)
from uaip_db.errors import MigrationError
from uaip_db.migrations import backfill as batches

# Revision files import these from here (the two-release rename and type change).
__all__ = [
    "change_type_contract",
    "change_type_contract_undo",
    "change_type_expand",
    "change_type_expand_undo",
    "dual_write_name",
    "rename_column_contract",
    "rename_column_contract_undo",
    "rename_column_expand",
    "rename_column_expand_undo",
    "shadow_column",
]


def _quote(op: Any, name: str) -> str:
    return str(op.get_context().impl.dialect.identifier_preparer.quote(name))


def create_index_concurrently(
    op: Any, name: str, table: str, columns: Sequence[str], *, where: str | None = None
) -> None:
    """CREATE INDEX CONCURRENTLY outside the transaction; rebuilds an INVALID leftover first,
    and drops the INVALID index a failed build leaves (when the server lets it). `where` (SQL)
    makes it a partial index: `where="status = 'active'"`."""
    context = op.get_context()
    options: dict[str, Any] = {}
    if where is not None:
        from sqlalchemy import text  # noqa: PLC0415

        options["postgresql_where"] = text(where)
    with context.autocommit_block():
        if not context.as_sql and index_is_invalid(op, name):
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_quote(op, name)}")
        try:
            op.create_index(
                name,
                table,
                list(columns),
                postgresql_concurrently=True,
                if_not_exists=True,
                **options,
            )
        except Exception:
            _repair(op, name, f"DROP INDEX CONCURRENTLY IF EXISTS {_quote(op, name)}")
            raise


def drop_index_concurrently(op: Any, name: str) -> None:
    """DROP INDEX CONCURRENTLY outside the transaction.

    A drop that fails after PostgreSQL marked the index INVALID (it waits for older transactions
    after that) cannot be undone while those transactions last: REINDEX CONCURRENTLY would wait
    for them too and leave a `_ccold` index behind. The revision stays applied; `inv db.check`
    and `inv db.upgrade` name the INVALID index, and running the downgrade again finishes it.
    """
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_quote(op, name)}")


def _repair(op: Any, name: str, statement: str) -> None:
    """After a failed CONCURRENTLY step: try once to leave no INVALID index behind."""

    if op.get_context().as_sql:
        return
    with contextlib.suppress(Exception):
        bind = op.get_bind()
        if bind.in_transaction():
            bind.rollback()
        if index_is_invalid(op, name):
            op.execute(statement)


def index_is_invalid(op: Any, name: str) -> bool:
    from sqlalchemy import text  # noqa: PLC0415

    row = (
        op.get_bind()
        .execute(
            text(
                "SELECT NOT i.indisvalid FROM pg_index AS i "
                "JOIN pg_class AS c ON c.oid = i.indexrelid "
                "WHERE c.relname = :name AND pg_table_is_visible(c.oid)"
            ),
            {"name": name},
        )
        .first()
    )
    return bool(row and row[0])


def refuse_if_longer_than(op: Any, table: str, column: str, length: int) -> None:
    """Stop a narrowing downgrade that would have to truncate values.

    Online it counts them and raises MigrationError. Offline (`--sql`: the SQL a person reads
    or runs by hand, the rollback SQL of a release report) it cannot look, so it emits the same
    check as a DO block that raises before the statements that follow it.
    """
    if op.get_context().as_sql:
        op.execute(longer_than_guard(op, table, column, length))
        return
    from sqlalchemy import text  # noqa: PLC0415

    too_long = (
        op.get_bind()
        .execute(
            text(
                f"SELECT count(*) FROM {_quote(op, table)} WHERE length({_quote(op, column)}) > :n"
            ),
            {"n": length},
        )
        .scalar_one()
    )
    if too_long:
        raise MigrationError(_too_long_message(table, column, length, str(too_long)))


def _too_long_message(table: str, column: str, length: int, count: str) -> str:
    return (
        f"{table}.{column} has {count} value(s) longer than {length} characters; narrowing "
        "it would lose data. Shorten or remove them first, or restore a backup instead."
    )


GUARD_TAG = "$uaip_guard$"


def _percent(text: str) -> str:
    return text.replace("%", "%%")


def longer_than_guard(op: Any, table: str, column: str, length: int) -> str:
    """A DO block that raises, naming the count, when `table.column` holds a value longer than
    `length` characters: `refuse_if_longer_than` as plain SQL."""
    count = int(length)
    # RAISE's format reads % as a placeholder: the one for the count stays, others are doubled.
    message = _too_long_message(_percent(table), _percent(column), count, "%")
    return "\n".join(
        [
            f"DO {GUARD_TAG}",
            "DECLARE",
            "    too_long bigint;",
            "BEGIN",
            f"    SELECT count(*) INTO too_long FROM {_quote(op, table)}",
            f"        WHERE length({_quote(op, column)}) > {count};",
            "    IF too_long > 0 THEN",
            f"        RAISE EXCEPTION {_literal(message)}, too_long;",
            "    END IF;",
            "END",
            GUARD_TAG,
        ]
    )


def _literal(text: str | None) -> str:
    return "NULL" if text is None else "'" + text.replace("'", "''") + "'"


def set_comments(op: Any, comments: dict[str, str | None]) -> None:
    """COMMENT ON TABLE for "table" keys, COMMENT ON COLUMN for "table.column" keys."""
    for target, text in comments.items():
        if "." in target:
            table, column = target.split(".", 1)
            name = f"{_quote(op, table)}.{_quote(op, column)}"
            op.execute(f"COMMENT ON COLUMN {name} IS {_literal(text)}")
        else:
            op.execute(f"COMMENT ON TABLE {_quote(op, target)} IS {_literal(text)}")


# --- online data changes and constraints -----------------------------------------------------


def backfill(
    op: Any,
    table: str,
    *,
    set: Mapping[str, str],
    where: str | None = None,
    batch_rows: int | None = None,
    rows_per_second: float | None = None,
    name: str | None = None,
    lock_timeout: str | None = None,
    statement_timeout: str | None = None,
) -> None:
    """UPDATE `table` SET column = (sql expression), ... in primary-key order, `batch_rows` rows
    per short transaction (default 5,000; each with the migration's lock_timeout and a 60 s
    statement_timeout unless given), outside the revision's transaction, resumable after a kill.

    `where` (SQL) selects the rows still to do, e.g. "content_length IS NULL": a run after a
    finished one then changes nothing. `rows_per_second` caps the pace. Progress goes to the
    runner's report (rows done of total, rate, time left). `--sql` renders a DO block that does
    the same. The contract is in uaip_db.migrations.backfill and docs/MIGRATIONS.md.
    """

    batches.run(
        op,
        table,
        set,
        where=where,
        batch_rows=batch_rows,
        rows_per_second=rows_per_second,
        name=name,
        lock_timeout=lock_timeout,
        statement_timeout=statement_timeout,
    )


# The helpers below take their locks one statement at a time, outside the revision's
# transaction (each step must be safe to run again); squawk is told the form is the safe one.
_ROBUST = "-- squawk-ignore prefer-robust-stmts"


def _constraint_name(table: str, column: str, suffix: str) -> str:
    return f"{table}_{column}_{suffix}"[:63]


def _constraint_guard(
    table: str, name: str, statement: str, *, exists: bool, extra: str = ""
) -> str:
    """`statement` run only while `table` has (`exists`) or lacks a constraint `name`, and
    `extra` (SQL beginning with AND) holds: what makes each step safe to run again."""
    test = "EXISTS" if exists else "NOT EXISTS"
    return "\n".join(
        [
            "DO $uaip_constraint$ BEGIN",
            f"    IF {test} (SELECT 1 FROM pg_constraint WHERE conname = {_literal(name)}",
            f"               AND conrelid = {_literal(table)}::regclass){extra} THEN",
            f"        {statement};",
            "    END IF;",
            "END $uaip_constraint$",
        ]
    )


def set_not_null(op: Any, table: str, column: str) -> None:
    """SET NOT NULL without a long ACCESS EXCLUSIVE lock: add `CHECK (column IS NOT NULL) NOT
    VALID` (brief lock), `VALIDATE CONSTRAINT` (scans, writers go on), `SET NOT NULL` (brief: the
    valid check spares PostgreSQL the scan), then drop the check. Fails on VALIDATE, naming the
    constraint, while a row still holds NULL."""
    check = _constraint_name(table, column, "not_null")
    quoted_table, quoted_check, quoted_column = (_quote(op, n) for n in (table, check, column))
    not_yet = (
        " AND NOT (SELECT attnotnull FROM pg_attribute WHERE attrelid = "
        f"{_literal(table)}::regclass AND attname = {_literal(column)})"
    )
    with op.get_context().autocommit_block():
        op.execute(
            _constraint_guard(
                table,
                check,
                f"ALTER TABLE {quoted_table} ADD CONSTRAINT {quoted_check} "
                f"CHECK ({quoted_column} IS NOT NULL) NOT VALID",
                exists=False,
                extra=not_yet,
            )
        )
        op.execute(
            _constraint_guard(
                table,
                check,
                f"ALTER TABLE {quoted_table} VALIDATE CONSTRAINT {quoted_check}",
                exists=True,
            )
        )
        op.execute(
            f"{_ROBUST}, adding-not-nullable-field\n"
            f"ALTER TABLE {quoted_table} ALTER COLUMN {quoted_column} SET NOT NULL"
        )
        op.execute(
            f"{_ROBUST}, ban-drop-constraint\n"
            f"ALTER TABLE {quoted_table} DROP CONSTRAINT IF EXISTS {quoted_check}"
        )


def drop_not_null(op: Any, table: str, column: str) -> None:
    """The downgrade of set_not_null: DROP NOT NULL (a brief lock, no scan)."""
    op.execute(f"ALTER TABLE {_quote(op, table)} ALTER COLUMN {_quote(op, column)} DROP NOT NULL")


def add_foreign_key(
    op: Any,
    name: str,
    table: str,
    columns: Sequence[str],
    referenced_table: str,
    referenced_columns: Sequence[str],
    on_delete: str | None = None,
) -> None:
    """ADD CONSTRAINT ... FOREIGN KEY ... NOT VALID (a brief SHARE ROW EXCLUSIVE lock on both
    tables, no scan), then VALIDATE CONSTRAINT in its own transaction (scans under SHARE UPDATE
    EXCLUSIVE: writers go on). `on_delete`: CASCADE, SET NULL, RESTRICT... Safe to run again."""
    if on_delete is not None and on_delete.upper() not in (
        "CASCADE",
        "SET NULL",
        "SET DEFAULT",
        "RESTRICT",
        "NO ACTION",
    ):
        raise MigrationError(f"add_foreign_key {name}: on_delete={on_delete!r} is not an action.")
    quoted = ", ".join(_quote(op, c) for c in columns)
    referenced = ", ".join(_quote(op, c) for c in referenced_columns)
    action = f" ON DELETE {on_delete.upper()}" if on_delete else ""
    quoted_table, quoted_name = _quote(op, table), _quote(op, name)
    with op.get_context().autocommit_block():
        op.execute(
            _constraint_guard(
                table,
                name,
                f"ALTER TABLE {quoted_table} ADD CONSTRAINT {quoted_name} FOREIGN KEY ({quoted}) "
                f"REFERENCES {_quote(op, referenced_table)} ({referenced}){action} NOT VALID",
                exists=False,
            )
        )
        op.execute(f"{_ROBUST}\nALTER TABLE {quoted_table} VALIDATE CONSTRAINT {quoted_name}")


def drop_foreign_key(op: Any, name: str, table: str) -> None:
    """The downgrade of add_foreign_key (a brief lock on both tables)."""
    op.execute(
        f"{_ROBUST}, ban-drop-constraint\n"
        f"ALTER TABLE {_quote(op, table)} DROP CONSTRAINT IF EXISTS {_quote(op, name)}"
    )


def add_check_constraint(op: Any, table: str, name: str, condition: str) -> None:
    """ADD CONSTRAINT `name` CHECK (`condition`) NOT VALID in the revision's transaction (a
    brief ACCESS EXCLUSIVE lock, no scan), then VALIDATE CONSTRAINT outside it (scans under SHARE
    UPDATE EXCLUSIVE: writers go on). Fails on VALIDATE, naming the constraint, while a row
    breaks the condition. Safe to run again: each step looks in pg_constraint first."""
    quoted_table, quoted_name = _quote(op, table), _quote(op, name)
    op.execute(
        _constraint_guard(
            table,
            name,
            f"ALTER TABLE {quoted_table} ADD CONSTRAINT {quoted_name} CHECK ({condition}) "
            "NOT VALID",
            exists=False,
        )
    )
    with op.get_context().autocommit_block():
        op.execute(
            _constraint_guard(
                table,
                name,
                f"ALTER TABLE {quoted_table} VALIDATE CONSTRAINT {quoted_name}",
                exists=True,
            )
        )


def drop_check_constraint(op: Any, table: str, name: str) -> None:
    """The downgrade of add_check_constraint (a brief lock, no scan)."""
    op.execute(
        f"{_ROBUST}, ban-drop-constraint\n"
        f"ALTER TABLE {_quote(op, table)} DROP CONSTRAINT IF EXISTS {_quote(op, name)}"
    )
