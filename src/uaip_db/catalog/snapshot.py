"""A catalog-level fingerprint of a database, and the differences between two fingerprints.

Comparing SQLAlchemy metadata misses PL/pgSQL functions, triggers, extensions, check constraints
and JSONB defaults; this reads pg_catalog directly (not information_schema, which hides objects
the role does not own), so it sees all of them. A snapshot is a dict from a stable, readable
object name (`column sessions.email`, `function get_session_progress(uuid)`) to the attributes
that define the object, with no OIDs, column positions or other physical details, so two
databases built differently but holding the same schema give equal snapshots.

It covers what decides how the schema behaves, with `pg_dump --schema-only --no-owner` as the
referee (a change that alters that output changes the fingerprint, except for what is left out
below): tables with their storage options, replica identity and row-level security; columns with
collation, storage, compression, statistics target and options; constraints with deferrability
and validation; indexes with clustering and statistics targets; sequences; views; functions with
SECURITY DEFINER, LEAKPROOF, PARALLEL, COST, ROWS and SET settings; triggers and rules with their
ENABLE state; policies; extended statistics; enums, domains, composite and range types;
extensions, event triggers, default privileges; privileges on every object that has them;
comments; and, by name only, operators, collations, text search objects and other kinds this
project does not use. catalog/queries.py has the queries, and how privileges are read without
the names of roles that differ between machines.

Left out on purpose:
- owners: they differ between machines, and `pg_restore --no-owner` gives every object to the
  role that restores (in privileges and policy roles the owner is written `(owner)`);
- `alembic_version` and tables named `uaip_db_*` (bookkeeping) with everything that hangs off
  them, and objects that belong to an extension (the extension's version stands for them);
- schemas that were not asked for, and what belongs to no schema: casts, languages,
  foreign-data wrappers and servers, roles;
- the environment: tablespaces, database settings (`ALTER DATABASE ... SET`), security labels,
  publications and subscriptions;
- data: sequence values, whether a materialized view is populated;
- physical details: OIDs, column positions, dropped columns. Text PostgreSQL re-spells after a
  dump and restore (see canonical_definition) is compared in one spelling.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from uaip_db.catalog import trust
from uaip_db.catalog.queries import OTHER_KINDS, QUERIES
from uaip_db.pg import reading
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
# Every kind of object a snapshot keys; longest first, so "window function" wins over "function"
# and "operator class" over "operator".
KINDS = tuple(
    sorted(
        {
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
            "rule",
            "policy",
            "statistics",
            "extension",
            "schema",
            "sequence",
            "view",
            "enum",
            "domain",
            "composite type",
            "range type",
            "default privileges",
            "event trigger",
            *OTHER_KINDS,
        },
        key=lambda kind: (-len(kind), kind),
    )
)
# Attributes holding a constraint's SQL (or a list of `name: SQL`), spelled one way (see
# canonical_definition).
CONSTRAINT_TEXT = {
    "constraint": ("definition",),
    "domain": ("constraints",),
    "policy": ("using", "with_check"),
}


@dataclass(frozen=True, order=True)
class ObjectKey:
    """A snapshot's key, typed: `column sessions.email` is ObjectKey("column", "sessions.email")."""

    kind: str
    name: str

    @classmethod
    def parse(cls, key: str) -> ObjectKey:
        return _parsed(key)

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


# The longest kind that starts a key wins (KINDS is longest first). A run of checks parses the
# same few hundred keys hundreds of thousands of times, hence the cache.
_KNOWN_KIND = re.compile("(" + "|".join(re.escape(kind) for kind in KINDS) + ") ")


@functools.lru_cache(maxsize=1 << 16)
def _parsed(key: str) -> ObjectKey:
    known = _KNOWN_KIND.match(key)
    if known:
        return ObjectKey(known.group(1), key[known.end() :])
    kind, _, name = key.partition(" ")
    return ObjectKey(kind, name)


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
    with reading(database) as conn:
        return take_from(conn, schemas)


def take_from(conn: psycopg.Connection[Any], schemas: Sequence[str] = DEFAULT_SCHEMAS) -> Snapshot:
    """The snapshot read through an open connection, in one transaction of its own.

    The search_path is pinned with SET LOCAL, so an idle connection keeps its settings; inside
    an open transaction the pin lasts until that transaction ends.
    """
    from psycopg import sql  # noqa: PLC0415
    from psycopg.rows import dict_row  # noqa: PLC0415

    if isinstance(schemas, str):  # a lone name would otherwise be read letter by letter
        schemas = (schemas,)
    if not schemas:
        raise ValueError("a snapshot needs at least one schema")
    objects: dict[str, dict[str, Any]] = {}
    with conn.transaction():
        # The queries below run with `schemas` on the search_path (for pg_get_*'s names): refuse
        # first if another role's operator or function there could stand in for pg_catalog's.
        trust.check_shadows(conn, schemas)
        # Every query is sent before any result is read (pipeline mode): one round trip, not
        # one per query. The pg_get_* functions qualify names that are not on the search_path;
        # pinning it (for this transaction only) makes their text independent of the role's.
        with conn.pipeline() as pipeline:
            conn.execute(
                sql.SQL("SET LOCAL search_path TO {}").format(
                    sql.SQL(", ").join(sql.Identifier(schema) for schema in schemas)
                )
            )
            cursors = [conn.cursor(row_factory=dict_row) for _ in QUERIES]
            for cursor, query in zip(cursors, QUERIES, strict=True):
                cursor.execute(query, {"schemas": list(schemas)})
            pipeline.sync()
            results = [cursor.fetchall() for cursor in cursors]
        for rows in results:
            for row in rows:
                key = row.pop("key")
                attributes = {name: value for name, value in row.items() if value is not None}
                if "body" in attributes:
                    attributes["body"] = normalise_body(attributes["body"])
                for name in CONSTRAINT_TEXT.get(ObjectKey.parse(key).kind, ()):
                    if isinstance(attributes.get(name), list):
                        attributes[name] = [canonical_definition(v) for v in attributes[name]]
                    elif name in attributes:
                        attributes[name] = canonical_definition(attributes[name])
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
