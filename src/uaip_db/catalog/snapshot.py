"""A catalog-level fingerprint of a database, and the differences between two fingerprints.

Comparing SQLAlchemy metadata misses PL/pgSQL functions, triggers, extensions, check constraints
and JSONB defaults; this reads pg_catalog directly (not information_schema, which hides objects
the role does not own), so it sees all of them. A snapshot is a dict from a stable, readable
object name (`column sessions.email`, `function get_session_progress(uuid)`) to the attributes
that define the object, with no OIDs, column positions or other physical details, so two
databases built differently but holding the same schema give equal snapshots.

Left out: `alembic_version` and tables named `uaip_db_*` (bookkeeping) with everything that
hangs off them, objects that belong to an extension, owners and privileges.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from uaip_db.pg import connection
from uaip_db.settings import DatabaseConfig

if TYPE_CHECKING:
    import psycopg

DEFAULT_SCHEMAS = ("public",)
ARRAY_OF_CAST_LITERALS = re.compile(
    r"ARRAY\[((?:'(?:[^']|'')*'(?:::[\w ]+)+(?:, )?)+)\]::([\w ]+)\[\]"
)
CAST_LITERAL = re.compile(r"'(?:[^']|'')*'(?:::[\w ]+)+")
# Attributes whose values are too long for a one-line difference.
# Attributes too long to print inline, and the longest value printed inline.
LONG_ATTRIBUTES = frozenset({"body", "definition"})
SHORT_VALUE_LIMIT = 60
# Every kind of object a snapshot keys; longest first, so "window function" wins over "function".
KINDS = (
    "materialized view",
    "window function",
    "aggregate",
    "procedure",
    "function",
    "table",
    "column",
    "constraint",
    "index",
    "trigger",
    "extension",
    "schema",
    "sequence",
    "view",
    "enum",
)


@dataclass(frozen=True, order=True)
class ObjectKey:
    """A snapshot's key, typed: `column sessions.email` is ObjectKey("column", "sessions.email")."""

    kind: str
    name: str

    @classmethod
    def parse(cls, key: str) -> ObjectKey:
        for kind in KINDS:
            if key.startswith(kind + " "):
                return cls(kind, key[len(kind) + 1 :])
        kind, _, name = key.partition(" ")
        return cls(kind, name)

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class Snapshot:
    """Object name -> attributes; attributes that are unset (SQL NULL) are left out."""

    objects: dict[str, dict[str, Any]]

    def to_json(self) -> str:
        return json.dumps(self.objects, sort_keys=True, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        data = json.loads(text)
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise ValueError("a snapshot is a JSON object of objects (name -> attributes)")
        return cls(data)

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def __len__(self) -> int:
        return len(self.objects)

    def object_keys(self) -> list[ObjectKey]:
        return [ObjectKey.parse(key) for key in self.objects]

    def of_kind(self, kind: str) -> dict[str, dict[str, Any]]:
        """Name -> attributes of every object of one kind (`of_kind("column")`)."""
        found = {}
        for key, attributes in self.objects.items():
            parsed = ObjectKey.parse(key)
            if parsed.kind == kind:
                found[parsed.name] = attributes
        return found

    def tables(self) -> set[str]:
        return set(self.of_kind("table"))


def take(database: DatabaseConfig, schemas: Sequence[str] = DEFAULT_SCHEMAS) -> Snapshot:
    """The snapshot of the objects in `schemas` of `database` (plus its extensions)."""
    with connection(database) as conn:
        return take_from(conn, schemas)


def take_from(conn: psycopg.Connection[Any], schemas: Sequence[str] = DEFAULT_SCHEMAS) -> Snapshot:
    """The snapshot read through an open connection, in one transaction of its own.

    The search_path is pinned with SET LOCAL, so an idle connection keeps its settings; inside
    an open transaction the pin lasts until that transaction ends.
    """
    from psycopg import sql
    from psycopg.rows import dict_row

    if isinstance(schemas, str):  # a lone name would otherwise be read letter by letter
        schemas = (schemas,)
    if not schemas:
        raise ValueError("a snapshot needs at least one schema")
    objects: dict[str, dict[str, Any]] = {}
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cursor:
        # The pg_get_* functions qualify names that are not on the search_path; pinning it
        # (for this transaction only) makes their text independent of the role's settings.
        cursor.execute(
            sql.SQL("SET LOCAL search_path TO {}").format(
                sql.SQL(", ").join(sql.Identifier(schema) for schema in schemas)
            )
        )
        for query in QUERIES:
            for row in cursor.execute(query, {"schemas": list(schemas)}):
                key = row.pop("key")
                attributes = {name: value for name, value in row.items() if value is not None}
                if "body" in attributes:
                    attributes["body"] = normalise_body(attributes["body"])
                if key.startswith("constraint ") and "definition" in attributes:
                    attributes["definition"] = canonical_definition(attributes["definition"])
                objects[key] = attributes
    return Snapshot(objects)


def canonical_definition(text: str) -> str:
    """One spelling for `ARRAY['a'::T, 'b'::T]::U[]` and `ARRAY['a'::T::U, 'b'::T::U]`.

    A CHECK like `status IN ('a', 'b')` on a varchar column reads back as the first form when it
    was created, and as the second once it went through pg_dump and pg_restore: the same
    constraint, different text. The second form is kept.
    """

    def rewrite(found: re.Match[str]) -> str:
        element_type = found.group(2)
        elements = CAST_LITERAL.sub(lambda e: f"{e.group(0)}::{element_type}", found.group(1))
        return f"ARRAY[{elements}]"

    return ARRAY_OF_CAST_LITERALS.sub(rewrite, text)


def normalise_body(body: str) -> str:
    """Ignore trailing spaces and the blank lines around a function body."""
    lines = [line.rstrip() for line in body.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


@dataclass(frozen=True, order=True)
class Difference:
    """One difference between two snapshots: an object missing or unexpected, or one of its
    attributes changed (`attribute` set, `before`/`after` its values, None when unset)."""

    key: ObjectKey
    attribute: str = ""
    before: Any = field(default=None, compare=False)
    after: Any = field(default=None, compare=False)
    status: str = field(default="changed", compare=False)  # missing | unexpected | changed

    def line(self) -> str:
        if self.status != "changed":
            return f"{self.key}: {self.status}"
        before, after = render_value(self.before), render_value(self.after)
        if is_long(self.attribute, before, after):
            return f"{self.key}: {self.attribute} differs"
        return f"{self.key}: {self.attribute} {before} -> {after}"


def differences(expected: Snapshot, actual: Snapshot) -> list[Difference]:
    """THE comparison of two snapshots: every difference, sorted by object, then attribute."""
    found: list[Difference] = []
    for name in expected.objects.keys() | actual.objects.keys():
        key = ObjectKey.parse(name)
        if name not in actual.objects:
            found.append(Difference(key, status="missing"))
        elif name not in expected.objects:
            found.append(Difference(key, status="unexpected"))
        else:
            before, after = expected.objects[name], actual.objects[name]
            for attribute in before.keys() | after.keys():
                if before.get(attribute) != after.get(attribute):
                    found.append(
                        Difference(key, attribute, before.get(attribute), after.get(attribute))
                    )
    return sorted(found)


def diff(expected: Snapshot, actual: Snapshot) -> list[str]:
    """One sorted line per difference; an empty list means the snapshots are equal."""
    return sorted(difference.line() for difference in differences(expected, actual))


def is_long(attribute: str, before: str, after: str) -> bool:
    """Whether a change is said as `differs` rather than shown value by value."""
    too_long = max(len(before), len(after)) > SHORT_VALUE_LIMIT or "\n" in before + after
    return attribute in LONG_ATTRIBUTES or too_long


def render_value(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def describe(lines: list[str], limit: int = 20) -> str:
    """The first `limit` differences, one a line, and how many more were cut."""
    shown = "\n".join(lines[:limit])
    if len(lines) > limit:
        shown += f"\n... and {len(lines) - limit} more"
    return shown


# --- the catalog queries: one per kind of object, each returning `key` and the attributes ----


def _qualified(schema: str, name: str) -> str:
    """SQL for an object's name, prefixed with its schema unless that is public."""
    return f"CASE {schema} WHEN 'public' THEN '' ELSE {schema} || '.' END || {name}"


def _not_from_extension(catalog: str, oid: str) -> str:
    return (
        "NOT EXISTS (SELECT FROM pg_depend AS ext "
        f"WHERE ext.classid = '{catalog}'::regclass AND ext.objid = {oid} AND ext.deptype = 'e')"
    )


# The relations a snapshot covers; columns, constraints, indexes and triggers hang off these.
RELATIONS = f"""
WITH rel AS (
    SELECT c.oid, c.relkind, {_qualified("n.nspname", "c.relname")} AS name
    FROM pg_class AS c
    JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = ANY(%(schemas)s)
      AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
      AND c.relname <> 'alembic_version'
      AND NOT starts_with(c.relname, 'uaip_db_')
      AND {_not_from_extension("pg_class", "c.oid")}
)
"""

EXTENSIONS = """
SELECT 'extension ' || x.extname AS key,
       x.extversion AS version,
       n.nspname AS schema,
       obj_description(x.oid, 'pg_extension') AS comment
FROM pg_extension AS x
JOIN pg_namespace AS n ON n.oid = x.extnamespace
WHERE x.extname <> 'plpgsql'
"""

SCHEMAS = """
SELECT 'schema ' || n.nspname AS key, obj_description(n.oid, 'pg_namespace') AS comment
FROM pg_namespace AS n
WHERE n.nspname = ANY(%(schemas)s) AND n.nspname <> 'public'
"""

TABLES = f"""{RELATIONS}
SELECT 'table ' || rel.name AS key,
       CASE c.relpersistence WHEN 'u' THEN 'unlogged' WHEN 't' THEN 'temporary'
            ELSE 'permanent' END AS persistence,
       pg_get_partkeydef(c.oid) AS partition_key,
       (SELECT array_agg({_qualified("pn.nspname", "p.relname")} ORDER BY i.inhseqno)
          FROM pg_inherits AS i
          JOIN pg_class AS p ON p.oid = i.inhparent
          JOIN pg_namespace AS pn ON pn.oid = p.relnamespace
         WHERE i.inhrelid = c.oid) AS inherits,
       pg_get_expr(c.relpartbound, c.oid) AS partition_bound,
       obj_description(c.oid, 'pg_class') AS comment
FROM rel
JOIN pg_class AS c ON c.oid = rel.oid
WHERE rel.relkind IN ('r', 'p')
"""

COLUMNS = f"""{RELATIONS}
SELECT 'column ' || rel.name || '.' || a.attname AS key,
       format_type(a.atttypid, a.atttypmod) AS type,
       a.attnotnull AS not_null,
       CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END AS default,
       CASE WHEN a.attgenerated = 's' THEN pg_get_expr(d.adbin, d.adrelid) END AS generated,
       CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END AS identity,
       CASE WHEN a.attcollation <> t.typcollation THEN co.collname END AS collation,
       col_description(a.attrelid, a.attnum) AS comment
FROM rel
JOIN pg_attribute AS a ON a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type AS t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_collation AS co ON co.oid = a.attcollation
WHERE rel.relkind IN ('r', 'p')
"""

CONSTRAINTS = f"""{RELATIONS}
SELECT 'constraint ' || rel.name || '.' || con.conname AS key,
       pg_get_constraintdef(con.oid, true) AS definition,
       con.condeferrable AS deferrable,
       con.condeferred AS initially_deferred,
       obj_description(con.oid, 'pg_constraint') AS comment
FROM rel
JOIN pg_constraint AS con ON con.conrelid = rel.oid
WHERE con.contype IN ('p', 'u', 'f', 'c', 'x')
"""

INDEXES = f"""{RELATIONS}
SELECT 'index ' || {_qualified("n.nspname", "ic.relname")} AS key,
       pg_get_indexdef(i.indexrelid) AS definition,
       i.indisunique AS unique,
       i.indisvalid AS valid,
       (SELECT con.conname FROM pg_constraint AS con
         WHERE con.conindid = i.indexrelid AND con.conrelid = i.indrelid
           AND con.contype IN ('p', 'u', 'x')) AS constraint,
       obj_description(i.indexrelid, 'pg_class') AS comment
FROM rel
JOIN pg_index AS i ON i.indrelid = rel.oid
JOIN pg_class AS ic ON ic.oid = i.indexrelid
JOIN pg_namespace AS n ON n.oid = ic.relnamespace
"""

SEQUENCES = f"""{RELATIONS}
SELECT 'sequence ' || rel.name AS key,
       format_type(s.seqtypid, NULL) AS data_type,
       s.seqstart AS start,
       s.seqincrement AS increment,
       s.seqmin AS minimum,
       s.seqmax AS maximum,
       s.seqcache AS cache,
       s.seqcycle AS cycle,
       owner.name || '.' || a.attname AS owned_by,
       obj_description(s.seqrelid, 'pg_class') AS comment
FROM rel
JOIN pg_sequence AS s ON s.seqrelid = rel.oid
LEFT JOIN pg_depend AS d
       ON d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
      AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
LEFT JOIN rel AS owner ON owner.oid = d.refobjid
LEFT JOIN pg_attribute AS a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
-- a sequence owned by a table the snapshot leaves out is left out with it
WHERE d.objid IS NULL OR owner.oid IS NOT NULL
"""

VIEWS = f"""{RELATIONS}
SELECT CASE rel.relkind WHEN 'm' THEN 'materialized view ' ELSE 'view ' END || rel.name AS key,
       pg_get_viewdef(rel.oid, true) AS definition,
       obj_description(rel.oid, 'pg_class') AS comment
FROM rel
WHERE rel.relkind IN ('v', 'm')
"""

FUNCTIONS = f"""
SELECT CASE p.prokind WHEN 'p' THEN 'procedure ' WHEN 'a' THEN 'aggregate '
            WHEN 'w' THEN 'window function ' ELSE 'function ' END
       || {_qualified("n.nspname", "p.proname")} || '(' || oidvectortypes(p.proargtypes) || ')'
       AS key,
       pg_get_function_arguments(p.oid) AS arguments,
       pg_get_function_result(p.oid) AS result,
       l.lanname AS language,
       CASE p.provolatile WHEN 'i' THEN 'immutable' WHEN 's' THEN 'stable'
            ELSE 'volatile' END AS volatility,
       p.proisstrict AS strict,
       p.prosecdef AS security_definer,
       CASE p.proparallel WHEN 's' THEN 'safe' WHEN 'r' THEN 'restricted'
            ELSE 'unsafe' END AS parallel,
       p.proconfig AS settings,
       -- SQL-standard bodies (BEGIN ATOMIC) keep no source text
       coalesce(pg_get_function_sqlbody(p.oid), p.prosrc) AS body,
       obj_description(p.oid, 'pg_proc') AS comment
FROM pg_proc AS p
JOIN pg_namespace AS n ON n.oid = p.pronamespace
JOIN pg_language AS l ON l.oid = p.prolang
WHERE n.nspname = ANY(%(schemas)s)
  AND {_not_from_extension("pg_proc", "p.oid")}
"""

TRIGGERS = f"""{RELATIONS}
SELECT 'trigger ' || rel.name || '.' || t.tgname AS key,
       pg_get_triggerdef(t.oid, true) AS definition,
       CASE t.tgenabled WHEN 'O' THEN 'enabled' WHEN 'D' THEN 'disabled'
            WHEN 'R' THEN 'replica only' WHEN 'A' THEN 'always' END AS state,
       obj_description(t.oid, 'pg_trigger') AS comment
FROM rel
JOIN pg_trigger AS t ON t.tgrelid = rel.oid
WHERE NOT t.tgisinternal
"""

ENUMS = f"""
SELECT 'enum ' || {_qualified("n.nspname", "t.typname")} AS key,
       (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder)
          FROM pg_enum AS e WHERE e.enumtypid = t.oid) AS labels,
       obj_description(t.oid, 'pg_type') AS comment
FROM pg_type AS t
JOIN pg_namespace AS n ON n.oid = t.typnamespace
WHERE t.typtype = 'e'
  AND n.nspname = ANY(%(schemas)s)
  AND {_not_from_extension("pg_type", "t.oid")}
"""

QUERIES = (
    EXTENSIONS,
    SCHEMAS,
    TABLES,
    COLUMNS,
    CONSTRAINTS,
    INDEXES,
    SEQUENCES,
    VIEWS,
    FUNCTIONS,
    TRIGGERS,
    ENUMS,
)
