"""Renaming a column or changing its type across two releases (expand, then contract).

While both releases of the application write, a BEFORE INSERT OR UPDATE trigger keeps the old
column and the new one in step; the expand revision installs it and backfills the new column
(uaip_db.migrations.backfill: batched, resumable), the contract revision removes it with the old
column. Revision files import these helpers from uaip_db.ops; docs/MIGRATIONS.md shows them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from uaip_db.migrations import backfill as batches


def _quote(op: Any, name: str) -> str:
    return str(op.get_context().impl.dialect.identifier_preparer.quote(name))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def dual_write_name(table: str, old: str, new: str, prefix: str = "") -> str:
    """The function's name: `<table>_<old>_<new>_dual_write` (the trigger's: with `prefix`),
    shortened with a hash to PostgreSQL's 63 bytes when longer."""
    name = f"{prefix}{table}_{old}_{new}_dual_write"
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return name.encode()[:50].decode(errors="ignore") + f"_{digest}_dw"


def _in_step(op: Any, table: str, old: str, new: str, forward: str, backward: str) -> None:
    """CREATE OR REPLACE the dual-write function and trigger on `table`: what a release writes in
    `old` reaches `new` as `forward` (SQL over NEW), and what it writes in `new` reaches `old` as
    `backward`. An INSERT that sets one of them fills the other; an UPDATE copies the one that
    changed (when `new` changed to what `forward` gives already, nothing)."""
    name = _quote(op, dual_write_name(table, old, new))
    o, n = _quote(op, old), _quote(op, new)
    op.execute(
        "\n".join(
            [
                f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql",
                f"SET search_path = pg_catalog, pg_temp AS {DUAL_WRITE_TAG}",
                "DECLARE",
                "    backfilled record;",
                "BEGIN",
                f"    IF TG_OP = 'UPDATE' AND current_setting({_literal(batches.BACKFILLING)}, "
                "true) = 'on' THEN",
                "        -- A backfill's batch fills one of the two: the row keeps everything else",
                "        -- as it was, whatever the table's other BEFORE triggers (an updated_at",
                "        -- one) did; this trigger fires after them (PostgreSQL goes by name).",
                "        backfilled := NEW;",
                "        NEW := OLD;",
                f"        NEW.{o} := backfilled.{o};",
                f"        NEW.{n} := backfilled.{n};",
                "        RETURN NEW;",
                "    END IF;",
                "    IF TG_OP = 'INSERT' THEN",
                f"        IF NEW.{n} IS NULL AND NEW.{o} IS NOT NULL THEN",
                f"            NEW.{n} := {forward};",
                f"        ELSIF NEW.{o} IS NULL AND NEW.{n} IS NOT NULL THEN",
                f"            NEW.{o} := {backward};",
                "        END IF;",
                f"    ELSIF NEW.{o} IS DISTINCT FROM OLD.{o} THEN",
                f"        IF NEW.{n} IS NOT DISTINCT FROM OLD.{n} THEN",
                f"            NEW.{n} := {forward};",
                "        END IF;",
                f"    ELSIF NEW.{n} IS DISTINCT FROM OLD.{n}",
                f"          AND NEW.{n} IS DISTINCT FROM {forward} THEN",
                f"        NEW.{o} := {backward};",
                "    END IF;",
                "    RETURN NEW;",
                "END",
                DUAL_WRITE_TAG,
            ]
        )
    )
    op.execute(
        f"CREATE OR REPLACE TRIGGER {_quote(op, trigger_name(table, old, new))} "
        f"BEFORE INSERT OR UPDATE ON {_quote(op, table)}\n"
        f"FOR EACH ROW EXECUTE FUNCTION {name}()"
    )


DUAL_WRITE_TAG = "$uaip_dual_write$"
# BEFORE triggers on the same event fire in name order: this prefix puts the dual-write trigger
# after the table's own ones (update_sessions_updated_at), so a backfill moves nothing else.
LAST = "zz_"


def trigger_name(table: str, old: str, new: str) -> str:
    return dual_write_name(table, old, new, prefix=LAST)


def _out_of_step(op: Any, table: str, old: str, new: str) -> None:
    """Drop the dual-write trigger and function `_in_step` installed (if they are there)."""
    name = _quote(op, dual_write_name(table, old, new))
    trigger = _quote(op, trigger_name(table, old, new))
    op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {_quote(op, table)}")
    op.execute(f"DROP FUNCTION IF EXISTS {name}()")


def _add_column_like(op: Any, table: str, column: str, like: str, type: str | None) -> None:
    """ADD COLUMN IF NOT EXISTS `column` of `type`, else of the type `like` has (looked up when
    the statement runs, so that `--sql` renders it too)."""
    quoted_table, quoted_column = _quote(op, table), _quote(op, column)
    if type is not None:
        op.execute(f"ALTER TABLE {quoted_table} ADD COLUMN IF NOT EXISTS {quoted_column} {type}")
        return
    op.execute(
        _when_column(
            table,
            column,
            exists=False,
            statements=[],
            dynamic=[
                "format('ALTER TABLE %s ADD COLUMN %s %s',",
                f"        {_literal(quoted_table)}, {_literal(quoted_column)},",
                "        (SELECT format_type(atttypid, atttypmod) FROM pg_attribute",
                f"          WHERE attrelid = {_literal(quoted_table)}::regclass",
                f"            AND attname = {_literal(like)} AND NOT attisdropped))",
            ],
        )
    )


def _drop_column(op: Any, table: str, column: str) -> None:
    op.execute(f"ALTER TABLE {_quote(op, table)} DROP COLUMN IF EXISTS {_quote(op, column)}")


def _over_row(op: Any, expression: str, column: str) -> str:
    """`expression` (SQL over NEW.<column>, as the trigger reads it) as SQL over the row an
    UPDATE visits: NEW is a one-column row made from it."""
    quoted = _quote(op, column)
    return f"(SELECT {expression} FROM (SELECT {quoted}) AS new({quoted}))"


def _fill(op: Any, table: str, target: str, source: str, value: str) -> None:
    """Backfill `target` with `value` where it is NULL and `source` is not (resumable, batched)."""
    where = f"{_quote(op, target)} IS NULL AND {_quote(op, source)} IS NOT NULL"
    batches.run(
        op,
        table,
        {target: value},
        where=where,
        batch_rows=None,
        rows_per_second=None,
        name=None,
        lock_timeout=None,
        statement_timeout=None,
    )


def _copy_comment(op: Any, table: str, source: str, target: str) -> None:
    """`target` gets `source`'s comment unless it has one (a DO block, so `--sql` renders it)."""
    quoted_table = _literal(_quote(op, table))

    def comment_of(column: str) -> str:
        return (
            f"col_description({quoted_table}::regclass, (SELECT attnum FROM pg_attribute "
            f"WHERE attrelid = {quoted_table}::regclass AND attname = {_literal(column)}))"
        )

    op.execute(
        "\n".join(
            [
                f"DO {COMMENT_TAG}",
                "BEGIN",
                f"    IF {comment_of(target)} IS NULL AND {comment_of(source)} IS NOT NULL THEN",
                "        EXECUTE format('COMMENT ON COLUMN %s.%s IS %L',",
                f"            {quoted_table}, {_literal(_quote(op, target))},",
                f"            {comment_of(source)});",
                "    END IF;",
                "END",
                COMMENT_TAG,
            ]
        )
    )


COMMENT_TAG = "$uaip_comment$"


def rename_column_expand(
    op: Any, table: str, old: str, new: str, *, type: str | None = None
) -> None:
    """The expand half of renaming `old` to `new` across two releases: add `new` (of `old`'s
    type unless `type` is given, with `old`'s comment unless the revision gives it one after),
    install the dual-write trigger that keeps the two equal while the previous release writes
    `old` and the new one writes `new`, then copy `old` into `new` with `backfill` (batched,
    resumable). Safe to run again."""
    _add_column_like(op, table, new, old, type)
    _copy_comment(op, table, old, new)
    _in_step(op, table, old, new, f"NEW.{_quote(op, old)}", f"NEW.{_quote(op, new)}")
    _fill(op, table, new, old, _quote(op, old))


def rename_column_expand_undo(op: Any, table: str, old: str, new: str) -> None:
    """The downgrade of rename_column_expand: drop the trigger, its function and `new`."""
    _out_of_step(op, table, old, new)
    _drop_column(op, table, new)


def rename_column_contract(op: Any, table: str, old: str, new: str) -> None:
    """The contract half, once every instance runs the release that uses `new`: drop the
    trigger, its function and `old` (declare `destroys_data` in the revision)."""
    _out_of_step(op, table, old, new)
    _drop_column(op, table, old)


def rename_column_contract_undo(
    op: Any, table: str, old: str, new: str, *, type: str | None = None
) -> None:
    """The downgrade of rename_column_contract: add `old` back (of `new`'s type unless `type` is
    given, with `new`'s comment), reinstall the trigger, refill `old` from `new` with
    `backfill`. What else `old` had (a default, NOT NULL, constraints, indexes, a comment other
    than `new`'s) is the revision's to restore."""
    _add_column_like(op, table, old, new, type)
    _copy_comment(op, table, new, old)
    _in_step(op, table, old, new, f"NEW.{_quote(op, old)}", f"NEW.{_quote(op, new)}")
    _fill(op, table, old, new, _quote(op, new))


def shadow_column(column: str) -> str:
    """The column of the new type while both releases write: `<column>_new`."""
    return f"{column}_new"


def change_type_expand(
    op: Any, table: str, column: str, new_type: str, *, using: str, back: str | None = None
) -> None:
    """The expand half of changing `column`'s type across two releases: add `<column>_new` of
    `new_type`, install a dual-write trigger that sets it to `using` (SQL over NEW.<column>, e.g.
    "NULLIF(NEW.x, '')::integer") when a release writes `column`, and `column` to `back` (SQL
    over NEW.<column>_new; by default the value itself, which PL/pgSQL converts by an
    assignment cast or else through text) when one writes only the shadow; then fill the shadow
    with `backfill`. Names outside pg_catalog in `using` must be schema-qualified."""
    shadow = shadow_column(column)
    _add_column_like(op, table, shadow, column, new_type)
    _copy_comment(op, table, column, shadow)  # it takes the column's place at the contract
    backward = back or f"NEW.{_quote(op, shadow)}"
    _in_step(op, table, column, shadow, using, backward)
    _fill(op, table, shadow, column, _over_row(op, using, column))


def change_type_expand_undo(op: Any, table: str, column: str) -> None:
    """The downgrade of change_type_expand: drop the trigger, its function and the shadow."""
    shadow = shadow_column(column)
    _out_of_step(op, table, column, shadow)
    _drop_column(op, table, shadow)


def change_type_contract(op: Any, table: str, column: str) -> None:
    """The contract half: drop the trigger and its function, drop `column` and rename
    `<column>_new` into its place (declare `destroys_data`). Safe to run again: once the
    shadow is gone it does nothing."""
    shadow = shadow_column(column)
    _out_of_step(op, table, column, shadow)
    quoted_table = _quote(op, table)
    op.execute(
        _when_column(
            table,
            shadow,
            exists=True,
            statements=[
                f"ALTER TABLE {quoted_table} DROP COLUMN IF EXISTS {_quote(op, column)}",
                f"ALTER TABLE {quoted_table} RENAME COLUMN {_quote(op, shadow)} "
                f"TO {_quote(op, column)}",
            ],
        )
    )


def change_type_contract_undo(
    op: Any,
    table: str,
    column: str,
    old_type: str,
    *,
    using: str,
    back: str | None = None,
) -> None:
    """The downgrade of change_type_contract: rename `column` back to `<column>_new`, add
    `column` of `old_type`, reinstall the trigger (pass the expand revision's `using` and
    `back`) and refill `column` from the shadow with `backfill` (`back`, else a cast through
    text). What else `column` had (a default, constraints, indexes) is the revision's to
    restore."""
    shadow = shadow_column(column)
    quoted_table, quoted_shadow = _quote(op, table), _quote(op, shadow)
    op.execute(
        _when_column(
            table,
            shadow,
            exists=False,
            statements=[
                f"ALTER TABLE {quoted_table} RENAME COLUMN {_quote(op, column)} TO {quoted_shadow}"
            ],
        )
    )
    _add_column_like(op, table, column, shadow, old_type)
    backward = back or f"NEW.{quoted_shadow}"
    _in_step(op, table, column, shadow, using, backward)
    value = _over_row(op, back, shadow) if back else f"CAST({quoted_shadow}::text AS {old_type})"
    _fill(op, table, column, shadow, value)


def _when_column(
    table: str, column: str, *, exists: bool, statements: list[str], dynamic: Sequence[str] = ()
) -> str:
    """`statements` (or the statement the SQL expression `dynamic` gives) run only while `table`
    has (`exists`) or lacks `column`."""
    test = "EXISTS" if exists else "NOT EXISTS"
    if dynamic:
        statements_sql = [f"        EXECUTE {dynamic[0]}", *(f"    {d}" for d in dynamic[1:])]
        statements_sql[-1] += ";"
    else:
        statements_sql = [f"        EXECUTE {_literal(s)};" for s in statements]
    return "\n".join(
        [
            "DO $uaip_column$ BEGIN",
            f"    IF {test} (SELECT 1 FROM pg_attribute WHERE attrelid = "
            f"quote_ident({_literal(table)})::regclass",
            f"               AND attname = {_literal(column)} AND NOT attisdropped) THEN",
            *statements_sql,
            "    END IF;",
            "END $uaip_column$",
        ]
    )
