"""The typed model of a catalog snapshot: tables with their columns, keys, indexes and triggers.

`read_schema` is the one place that turns a snapshot's flat string keys (`column sessions.email`,
`constraint sessions.sessions_pkey`, ...) into `Table`s and their parts; the Markdown, the
diagrams and the change summaries all read the schema through it or through the key helpers
here (`split_owner`, `object_table`); the keys themselves are `catalog.snapshot.ObjectKey`s.

A snapshot keeps no column positions, so columns are listed primary key first (in key order),
then by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from uaip_db.catalog.snapshot import ObjectKey, Snapshot

ROUTINE_KINDS = frozenset({"function", "procedure", "aggregate", "window function"})
TABLE_PARTS = frozenset({"column", "constraint", "trigger"})
# Kinds keyed `table.name`: the parts above, and rules and policies (listed with other objects).
ON_A_TABLE = TABLE_PARTS | {"rule", "policy"}

_IDENTIFIER = r'"(?:[^"]|"")*"|[^\s.,()"]+'
_IDENTIFIER_RE = re.compile(rf"({_IDENTIFIER})")
_QUALIFIED_NAME = rf"(?:{_IDENTIFIER})(?:\.(?:{_IDENTIFIER}))?"
_FOREIGN_KEY_RE = re.compile(
    r"^FOREIGN KEY \((?P<columns>[^)]*)\) REFERENCES "
    rf"(?P<target>{_QUALIFIED_NAME})\((?P<target_columns>[^)]*)\)(?P<actions>.*)$"
)
_INDEX_TABLE_RE = re.compile(rf"\bON (?:ONLY )?(?P<table>{_QUALIFIED_NAME}) USING ")
_INDEX_COLUMNS_RE = re.compile(r" USING \w+ \((?P<columns>[^()]*)\)(?P<rest>.*)$")
_KEY_COLUMNS_RE = re.compile(
    r"^(?:PRIMARY KEY|UNIQUE(?: NULLS NOT DISTINCT)?) \((?P<columns>[^)]*)\)"
)


# --- the model: tables with their parts, read from the flat snapshot ---------------------------


@dataclass(frozen=True)
class Column:
    name: str
    attributes: Mapping[str, Any]

    @property
    def type(self) -> str:
        return str(self.attributes.get("type", ""))

    @property
    def nullable(self) -> bool:
        return not self.attributes.get("not_null", False)

    @property
    def comment(self) -> str | None:
        return self.attributes.get("comment")


@dataclass(frozen=True)
class NamedDefinition:
    """An index, trigger or constraint: a name, its SQL, and what else the snapshot says."""

    name: str
    attributes: Mapping[str, Any]

    @property
    def definition(self) -> str:
        return str(self.attributes.get("definition", ""))

    @property
    def comment(self) -> str | None:
        return self.attributes.get("comment")


@dataclass(frozen=True)
class Constraint(NamedDefinition):
    @property
    def kind(self) -> str:
        for prefix, kind in (
            ("PRIMARY KEY", "primary key"),
            ("UNIQUE", "unique"),
            ("FOREIGN KEY", "foreign key"),
            ("CHECK", "check"),
            ("EXCLUDE", "exclusion"),
        ):
            if self.definition.startswith(prefix):
                return kind
        return "other"

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The columns of a primary key or unique constraint (empty for other kinds)."""
        match = _KEY_COLUMNS_RE.match(self.definition)
        return split_identifiers(match["columns"]) if match else ()


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: str
    columns: tuple[str, ...]
    target: str
    target_columns: tuple[str, ...]
    actions: str
    comment: str | None


@dataclass
class Table:
    name: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    columns: dict[str, Column] = field(default_factory=dict)
    constraints: dict[str, Constraint] = field(default_factory=dict)
    indexes: dict[str, NamedDefinition] = field(default_factory=dict)
    triggers: dict[str, NamedDefinition] = field(default_factory=dict)

    @property
    def comment(self) -> str | None:
        return self.attributes.get("comment")

    def constraints_of_kind(self, kind: str) -> list[Constraint]:
        return [c for _, c in sorted(self.constraints.items()) if c.kind == kind]

    @property
    def primary_key(self) -> Constraint | None:
        keys = self.constraints_of_kind("primary key")
        return keys[0] if keys else None

    @property
    def foreign_keys(self) -> list[ForeignKey]:
        keys = (parse_foreign_key(self.name, c) for c in self.constraints_of_kind("foreign key"))
        return [key for key in keys if key is not None]

    def unique_column_sets(self) -> set[frozenset[str]]:
        """Column sets a primary key, unique constraint or plain unique index makes unique."""
        sets = {
            frozenset(c.key_columns)
            for c in self.constraints.values()
            if c.kind in ("primary key", "unique") and c.key_columns
        }
        for index in self.indexes.values():
            columns = unique_index_columns(index)
            if columns:
                sets.add(frozenset(columns))
        return sets

    def ordered_columns(self) -> list[Column]:
        """Primary key columns in key order, then the others by name."""
        key = self.primary_key.key_columns if self.primary_key else ()
        first = [self.columns[name] for name in key if name in self.columns]
        rest = [c for name, c in sorted(self.columns.items()) if name not in key]
        return first + rest


@dataclass
class Schema:
    tables: dict[str, Table] = field(default_factory=dict)
    routines: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    extensions: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    others: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def sorted_tables(self) -> list[Table]:
        return [table for _, table in sorted(self.tables.items())]

    def foreign_keys(self) -> list[ForeignKey]:
        return [key for table in self.sorted_tables() for key in table.foreign_keys]


def split_owner(rest: str, tables: Iterable[str]) -> tuple[str, str]:
    """`sessions.email` -> (`sessions`, `email`), preferring the longest known table name."""
    owners = [table for table in tables if rest.startswith(table + ".")]
    if owners:
        owner = max(owners, key=len)
        return owner, rest[len(owner) + 1 :]
    owner, _, name = rest.rpartition(".")
    return owner, name


def unquote(identifier: str) -> str:
    if identifier.startswith('"') and identifier.endswith('"') and len(identifier) >= 2:
        return identifier[1:-1].replace('""', '"')
    return identifier


def split_identifiers(text: str) -> tuple[str, ...]:
    """`a, "B c"` -> (`a`, `B c`)."""
    return tuple(unquote(part) for part in _IDENTIFIER_RE.findall(text))


def snapshot_table_name(qualified: str) -> str:
    """A name as SQL prints it (`public.sessions`) -> as a snapshot keys it (`sessions`)."""
    parts = split_identifiers(qualified)
    if len(parts) == 2 and parts[0] == "public":
        parts = parts[1:]
    return ".".join(parts)


def index_table(attributes: Mapping[str, Any]) -> str | None:
    match = _INDEX_TABLE_RE.search(str(attributes.get("definition", "")))
    return snapshot_table_name(match["table"]) if match else None


def unique_index_columns(index: NamedDefinition) -> tuple[str, ...]:
    """The plain columns of a unique, non-partial index; empty when it is anything else."""
    if not index.attributes.get("unique"):
        return ()
    match = _INDEX_COLUMNS_RE.search(index.definition)
    if not match or (match["rest"] and not match["rest"].startswith(" INCLUDE")):
        return ()
    items = [item.strip() for item in match["columns"].split(",")]
    if not all(_IDENTIFIER_RE.fullmatch(item) for item in items):
        return ()
    return tuple(unquote(item) for item in items)


def parse_foreign_key(table: str, constraint: Constraint) -> ForeignKey | None:
    match = _FOREIGN_KEY_RE.match(constraint.definition)
    if not match:
        return None
    return ForeignKey(
        name=constraint.name,
        table=table,
        columns=split_identifiers(match["columns"]),
        target=snapshot_table_name(match["target"]),
        target_columns=split_identifiers(match["target_columns"]),
        actions=match["actions"].strip(),
        comment=constraint.comment,
    )


def object_table(kind: str, rest: str, attributes: Mapping[str, Any], tables: Iterable[str]) -> str:
    """The table an object hangs off (empty for objects of the schema itself)."""
    if kind in ON_A_TABLE:
        return split_owner(rest, tables)[0]
    if kind == "index":
        return index_table(attributes) or ""
    if kind == "sequence" and attributes.get("owned_by"):
        return split_owner(str(attributes["owned_by"]), tables)[0]
    return ""


def read_schema(snapshot: Snapshot) -> Schema:
    schema = Schema()
    objects = snapshot.objects
    for key, attributes in objects.items():
        parsed = ObjectKey.parse(key)
        if parsed.kind == "table":
            schema.tables[parsed.name] = Table(parsed.name, attributes)
    for key, attributes in sorted(objects.items()):
        _place(schema, key, attributes)
    return schema


def _place(schema: Schema, key: str, attributes: Mapping[str, Any]) -> None:
    parsed = ObjectKey.parse(key)
    kind, rest = parsed.kind, parsed.name
    if kind == "table":
        return
    owner = schema.tables.get(object_table(kind, rest, attributes, schema.tables))
    if kind in TABLE_PARTS and owner is not None:
        name = split_owner(rest, schema.tables)[1]
        if kind == "column":
            owner.columns[name] = Column(name, attributes)
        elif kind == "constraint":
            owner.constraints[name] = Constraint(name, attributes)
        else:
            owner.triggers[name] = NamedDefinition(name, attributes)
    elif kind == "index" and owner is not None:
        owner.indexes[rest] = NamedDefinition(rest, attributes)
    elif kind in ROUTINE_KINDS:
        schema.routines[key] = attributes
    elif kind == "extension":
        schema.extensions[rest] = attributes
    else:
        schema.others[key] = attributes


# --- coverage and words ---------------------------------------------------------------------------


def missing_comments(snapshot: Snapshot) -> list[str]:
    """Every table and column without a comment, as `table x` / `column x.y` (sorted)."""
    return sorted(
        key
        for key, attributes in snapshot.objects.items()
        if ObjectKey.parse(key).kind in ("table", "column") and not attributes.get("comment")
    )


def plural(count: int, noun: str) -> str:
    """`1 table`, `2 tables`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def value_text(value: Any) -> str:
    """An attribute value in words: `(none)`, `true`/`false`, lists joined with commas."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(value_text(item) for item in value)
    return str(value)
