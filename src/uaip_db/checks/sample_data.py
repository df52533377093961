"""Rows for every table, made from the catalog, and a content hash per table to prove they survive.

Round trips put rows into each table (and values into each column that has none) before every
step, so a migration that loses data shows up as a changed count or hash. Values respect types,
foreign keys, lengths and simple check constraints (the literals in `IN (...)` and ranges); they
include non-ASCII text and JSONB.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

from uaip_db.catalog.trust import is_bookkeeping

ROWS_PER_TABLE = 3


@dataclass
class Column:
    name: str
    type: str
    not_null: bool
    has_default: bool
    max_length: int | None
    references: tuple[str, str] | None = None
    check_literals: list[str] = field(default_factory=list)


@dataclass
class Table:
    name: str
    columns: list[Column]

    @property
    def depends_on(self) -> set[str]:
        return {
            c.references[0] for c in self.columns if c.references and c.references[0] != self.name
        }


TABLES_QUERY = """
SELECT c.relname, a.attname, format_type(a.atttypid, NULL), a.attnotnull,
       a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '',
       CASE WHEN a.atttypmod > 4 AND a.atttypid IN ('varchar'::regtype, 'bpchar'::regtype)
            THEN a.atttypmod - 4 END,
       (SELECT rc.relname || '.' || ra.attname
          FROM pg_constraint f
          JOIN pg_class rc ON rc.oid = f.confrelid
          JOIN pg_attribute ra ON ra.attrelid = f.confrelid AND ra.attnum = f.confkey[1]
         WHERE f.conrelid = c.oid AND f.contype = 'f' AND f.conkey = ARRAY[a.attnum]
         LIMIT 1),
       (SELECT string_agg(pg_get_constraintdef(k.oid), ' ')
          FROM pg_constraint k
         WHERE k.conrelid = c.oid AND k.contype = 'c' AND a.attnum = ANY(k.conkey))
FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
ORDER BY c.relname, a.attnum
"""


def read_tables(conn: psycopg.Connection[Any]) -> list[Table]:
    """User tables in foreign-key order (referenced tables first)."""
    tables: dict[str, Table] = {}
    for name, column, type_, not_null, has_default, length, ref, checks in conn.execute(
        TABLES_QUERY
    ).fetchall():
        if is_bookkeeping(name):  # the project's own tables hold no user data
            continue
        references = tuple(ref.split(".", 1)) if ref else None
        literals = check_literals(checks) if checks else []
        tables.setdefault(name, Table(name, [])).columns.append(
            Column(column, type_, not_null, has_default, length, references, literals)
        )
    return in_dependency_order(tables)


def in_dependency_order(tables: dict[str, Table]) -> list[Table]:
    ordered: list[Table] = []
    placed: set[str] = set()
    remaining = dict(tables)
    while remaining:
        ready = [
            t for t in remaining.values() if t.depends_on <= placed | (t.depends_on - set(tables))
        ]
        if not ready:  # a cycle: place the rest as they are and let inserts that fail be skipped
            ready = list(remaining.values())
        for table in sorted(ready, key=lambda t: t.name):
            ordered.append(table)
            placed.add(table.name)
            del remaining[table.name]
    return ordered


def check_literals(definition: str) -> list[str]:
    """The quoted strings, else the numbers, that a CHECK constraint compares with."""
    strings = re.findall(r"'((?:[^']|'')*)'", definition)
    if strings:
        return [s.replace("''", "'") for s in strings]
    return re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])", definition)


def value_for(column: Column, row: int, conn: psycopg.Connection[Any]) -> Any:
    """A value of the column's type for row number `row`; None when nothing sensible exists."""
    if column.references:
        table, key = column.references
        from psycopg import sql  # noqa: PLC0415

        found = (
            conn.execute(
                sql.SQL("SELECT {} FROM {} ORDER BY 1 OFFSET %s LIMIT 1").format(
                    sql.Identifier(key), sql.Identifier(table)
                ),
                (row,),
            ).fetchone()
            or conn.execute(
                sql.SQL("SELECT {} FROM {} ORDER BY 1 LIMIT 1").format(
                    sql.Identifier(key), sql.Identifier(table)
                )
            ).fetchone()
        )
        return found[0] if found else None
    kind = column.type
    if column.check_literals:
        literal = column.check_literals[row % len(column.check_literals)]
        return _cast_literal(literal, kind)
    if kind in ("uuid",):
        return uuid.uuid5(uuid.NAMESPACE_URL, f"uaip-db/{column.name}/{row}")
    if kind in ("text", "character varying", "character"):
        text = f"{column.name} {row}: Grüße, 数据, ✓"
        return text[: column.max_length] if column.max_length else text
    if kind in ("jsonb", "json"):
        return json.dumps({"row": row, "note": "naïve café ✓", "items": [1, 2, {"deep": True}]})
    if kind in ("integer", "bigint", "smallint"):
        return row + 1
    if kind in ("numeric", "double precision", "real"):
        return Decimal(row) + Decimal("0.5")
    if kind == "boolean":
        return row % 2 == 0
    if kind.startswith("timestamp"):
        return datetime(2025, 1, 15, 9, 30, tzinfo=UTC) + timedelta(hours=row)
    if kind == "date":
        return date(2025, 1, 15) + timedelta(days=row)
    if kind == "interval":
        return timedelta(minutes=row + 1)
    return None


def _cast_literal(literal: str, kind: str) -> Any:
    if kind in ("integer", "bigint", "smallint"):
        return int(float(literal))
    if kind in ("numeric", "double precision", "real"):
        return Decimal(literal)
    return literal


def fill(conn: psycopg.Connection[Any]) -> list[str]:
    """Give every table rows and every all-NULL column values; return what could not be filled."""
    from psycopg import sql  # noqa: PLC0415

    unfilled: list[str] = []
    for table in read_tables(conn):
        count = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table.name))
        ).fetchone()
        if count and count[0] == 0:
            for row in range(ROWS_PER_TABLE):
                if not _insert(conn, table, row):
                    unfilled.append(f"table {table.name}")
                    break
        for column in _columns_without_values(conn, table):
            if not _backfill(conn, table.name, column):
                unfilled.append(f"column {table.name}.{column.name}")
    return unfilled


def fill_many(conn: psycopg.Connection[Any], rows: int, per_parent: int = 3) -> list[str]:
    """Fill every table in bulk, one INSERT ... SELECT over generate_series per table.

    A table that references no other gets `rows` rows; a table with a foreign key gets about
    `per_parent` rows per referenced row (fewer where a unique constraint allows fewer: rows that
    would collide are skipped). Text is multibyte, JSON nested, every nullable column NULL in one
    row of seven. Returns the tables that could not be filled.
    """
    from psycopg import errors  # noqa: PLC0415

    unfilled: list[str] = []
    for table in read_tables(conn):
        try:
            with conn.transaction():
                conn.execute(_bulk_insert(table, rows, per_parent, with_defaults=True))
        except errors.DatabaseError:  # e.g. a generated column: let every default apply
            try:
                with conn.transaction():
                    conn.execute(_bulk_insert(table, rows, per_parent, with_defaults=False))
            except errors.DatabaseError:
                unfilled.append(f"table {table.name}")
    return unfilled


def _bulk_insert(table: Table, rows: int, per_parent: int, with_defaults: bool) -> sql.Composed:
    from psycopg import sql  # noqa: PLC0415

    parents = [c for c in table.columns if c.references and c.references[0] != table.name]
    count = rows * per_parent if parents else rows
    sources = [sql.SQL("generate_series(0, {}) AS i").format(sql.Literal(count - 1))]
    names: list[sql.Composable] = []
    values: list[sql.Composable] = []
    for number, column in enumerate(table.columns):
        if column.references:
            if column in parents:
                keys = sql.Identifier(f"keys_{number}")
                target, key = column.references
                sources.append(
                    sql.SQL("(SELECT array_agg({} ORDER BY {}) FROM {}) AS {}({})").format(
                        sql.Identifier(key),
                        sql.Identifier(key),
                        sql.Identifier(target),
                        sql.Identifier(f"p{number}"),
                        keys,
                    )
                )
                value: sql.Composable | None = sql.SQL("{}[1 + (i / {}) % cardinality({})]").format(
                    keys, sql.Literal(per_parent), keys
                )
            else:
                value = None  # a row of its own table: NULL if it may be, else the table is left
        elif column.has_default and not (with_defaults and _worth_a_value(column)):
            continue
        else:
            value = _bulk_value(column)
        if value is None:
            if column.not_null and not column.has_default:
                value = sql.NULL  # the insert fails and says which column
            else:
                continue
        elif not column.not_null and not column.references:
            value = sql.SQL("CASE WHEN i % 7 = 3 THEN NULL ELSE {} END").format(value)
        names.append(sql.Identifier(column.name))
        values.append(value)
    if not names:
        return sql.SQL("INSERT INTO {} SELECT FROM {} ON CONFLICT DO NOTHING").format(
            sql.Identifier(table.name), sources[0]
        )
    return sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
        sql.Identifier(table.name),
        sql.SQL(", ").join(names),
        sql.SQL(", ").join(values),
        sql.SQL(", ").join(sources),
    )


def _worth_a_value(column: Column) -> bool:
    """A column with a default that gets varied values anyway: constrained ones and JSON."""
    return bool(column.check_literals) or column.type in ("jsonb", "json")


def _bulk_value(column: Column) -> sql.Composable | None:
    """An SQL expression of row number `i` giving a value of the column's type, like value_for."""
    from psycopg import sql  # noqa: PLC0415

    kind, literals = column.type, column.check_literals
    if literals and kind in ("integer", "bigint", "smallint") and len(literals) == 2:
        low, high = sorted(int(float(n)) for n in literals)  # a range: BETWEEN, >= and <=
        return sql.SQL("{} + i % {}").format(sql.Literal(low), sql.Literal(high - low + 1))
    if literals:
        choices = [_cast_literal(literal, kind) for literal in literals]
        return sql.SQL("(ARRAY[{}])[1 + i % {}]").format(
            sql.SQL(", ").join(map(sql.Literal, choices)), sql.Literal(len(choices))
        )
    if kind == "uuid":
        return sql.SQL("md5({} || i)::uuid").format(sql.Literal(f"uaip-db/{column.name}/"))
    if kind in ("text", "character varying", "character"):
        text = sql.SQL("{} || i || {}").format(
            sql.Literal(f"{column.name} "), sql.Literal(": Grüße, 数据, ✓ — zweite\nZeile")
        )
        if column.max_length:
            return sql.SQL("left({}, {})").format(text, sql.Literal(column.max_length))
        return text
    if kind in ("jsonb", "json"):
        return (
            sql.SQL(
                "jsonb_build_object('row', i, 'note', 'naïve café ✓ 数据', 'nested', "
                "jsonb_build_object('tags', jsonb_build_array('ä', '数', i), "
                "'deep', jsonb_build_object('ok', i % 2 = 0, 'none', NULL)))"
            )
            if kind == "jsonb"
            else sql.SQL("json_build_object('row', i, 'note', 'naïve café ✓')")
        )
    if kind in ("integer", "bigint", "smallint"):
        return sql.SQL("i + 1")
    if kind in ("numeric", "double precision", "real"):
        return sql.SQL("i + 0.5")
    if kind == "boolean":
        return sql.SQL("i % 2 = 0")
    if kind.startswith("timestamp"):
        return sql.SQL("timestamptz '2025-01-15 09:30+00' + i * interval '1 hour'")
    if kind == "date":
        return sql.SQL("date '2025-01-15' + i::int")
    if kind == "interval":
        return sql.SQL("(i + 1) * interval '1 minute'")
    return None


def _insert(conn: psycopg.Connection[Any], table: Table, row: int) -> bool:
    from psycopg import errors, sql  # noqa: PLC0415

    chosen = [c for c in table.columns if not c.has_default or c.references]
    values = [value_for(c, row, conn) for c in chosen]
    names = [c.name for c, v in zip(chosen, values, strict=True) if v is not None]
    given = [v for v in values if v is not None]
    statement = (
        sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(table.name),
            sql.SQL(", ").join(map(sql.Identifier, names)),
            sql.SQL(", ").join(sql.Placeholder() * len(given)),
        )
        if names
        else sql.SQL("INSERT INTO {} DEFAULT VALUES").format(sql.Identifier(table.name))
    )
    try:
        with conn.transaction():
            conn.execute(statement, given)
    except errors.DatabaseError:
        return False
    return True


def _columns_without_values(conn: psycopg.Connection[Any], table: Table) -> list[Column]:
    """The nullable columns of `table` that hold no value in any row (one query per table)."""
    from psycopg import sql  # noqa: PLC0415

    nullable = [c for c in table.columns if not c.not_null]
    if not nullable:
        return []
    counts = conn.execute(
        sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(
                sql.SQL("count({})").format(sql.Identifier(c.name)) for c in nullable
            ),
            sql.Identifier(table.name),
        )
    ).fetchone()
    return [c for c, count in zip(nullable, counts or (), strict=True) if not count]


def _backfill(conn: psycopg.Connection[Any], table: str, column: Column) -> bool:
    from psycopg import errors, sql  # noqa: PLC0415

    rows = conn.execute(sql.SQL("SELECT ctid FROM {}").format(sql.Identifier(table))).fetchall()
    try:
        with conn.transaction():
            for number, (ctid,) in enumerate(rows):
                value = value_for(column, number, conn)
                if value is None:
                    return False
                conn.execute(
                    sql.SQL("UPDATE {} SET {} = %s WHERE ctid = %s").format(
                        sql.Identifier(table), sql.Identifier(column.name)
                    ),
                    (value, ctid),
                )
    except errors.DatabaseError:
        return False
    return True


@dataclass(frozen=True)
class TableRows:
    """A table's rows in brief: how many, an md5 of them, and an md5 of each column's values
    (in the rows' order), so that a change can be named by column."""

    count: int
    digest: str
    columns: tuple[tuple[str, str], ...] = ()

    def changed_columns(self, other: TableRows) -> list[str]:
        mine = dict(self.columns)
        return [name for name, digest in other.columns if name in mine and mine[name] != digest]


def table_hashes(
    conn: psycopg.Connection[Any], columns: dict[str, list[str]] | None = None
) -> dict[str, TableRows]:
    """Per table: row count and md5s of its rows and of each column (over `columns[table]`
    when given)."""
    from psycopg import sql  # noqa: PLC0415

    tables = read_tables(conn)
    asked = {}
    chosen_by_table: dict[str, list[str]] = {}
    with conn.pipeline():  # one round trip for every table
        for table in tables:
            names = (
                columns.get(table.name) if columns is not None else [c.name for c in table.columns]
            )
            if names is None:
                continue
            present = {c.name for c in table.columns}
            chosen = [n for n in names if n in present]
            chosen_by_table[table.name] = chosen
            row_text = (
                sql.SQL("ROW({})::text").format(sql.SQL(", ").join(map(sql.Identifier, chosen)))
                if chosen
                else sql.SQL("''")
            )
            per_column = [
                sql.SQL(
                    "md5(coalesce(string_agg(coalesce({}::text, '\\N'), E'\\n' "
                    "ORDER BY uaip_row), ''))"
                ).format(sql.Identifier(name))
                for name in chosen
            ]
            asked[table.name] = conn.execute(
                sql.SQL(
                    "SELECT count(*), "
                    "md5(coalesce(string_agg(uaip_row, E'\\n' ORDER BY uaip_row), '')){} "
                    "FROM (SELECT {} AS uaip_row, * FROM {}) AS rows"
                ).format(
                    sql.SQL("").join(sql.SQL(", ") + column for column in per_column),
                    row_text,
                    sql.Identifier(table.name),
                )
            )
    result: dict[str, TableRows] = {}
    for name, cursor in asked.items():
        row = cursor.fetchone() or (0, "")
        result[name] = TableRows(
            int(row[0]),
            str(row[1]),
            tuple(zip(chosen_by_table[name], (str(d) for d in row[2:]), strict=True)),
        )
    return result


def columns_of(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    return {t.name: [c.name for c in t.columns] for t in read_tables(conn)}


def changed_tables(
    before: dict[str, TableRows],
    after: dict[str, TableRows],
    ignore: Iterable[str] = (),
) -> list[str]:
    skipped = set(ignore)
    changes = []
    for table, was in sorted(before.items()):
        if table in skipped or table not in after:
            continue
        now = after[table]
        if now.count != was.count:
            changes.append(f"table {table}: {was.count} rows -> {now.count}")
        elif now.digest != was.digest:
            named = was.changed_columns(now)
            changes.append(
                f"table {table}: row contents changed"
                + (f" (column {', '.join(named)})" if named else "")
            )
    return changes
