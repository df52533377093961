"""Building blocks for revisions that must be safe to run again and never block writers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from uaip_db.errors import MigrationError


def _quote(op: Any, name: str) -> str:
    return str(op.get_context().impl.dialect.identifier_preparer.quote(name))


def create_index_concurrently(op: Any, name: str, table: str, columns: Sequence[str]) -> None:
    """CREATE INDEX CONCURRENTLY outside the transaction; rebuilds an INVALID leftover first,
    and drops the INVALID index a failed build leaves (when the server lets it)."""
    context = op.get_context()
    with context.autocommit_block():
        if not context.as_sql and index_is_invalid(op, name):
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_quote(op, name)}")
        try:
            op.create_index(
                name, table, list(columns), postgresql_concurrently=True, if_not_exists=True
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
    import contextlib

    if op.get_context().as_sql:
        return
    with contextlib.suppress(Exception):
        bind = op.get_bind()
        if bind.in_transaction():
            bind.rollback()
        if index_is_invalid(op, name):
            op.execute(statement)


def index_is_invalid(op: Any, name: str) -> bool:
    from sqlalchemy import text

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
    from sqlalchemy import text

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
