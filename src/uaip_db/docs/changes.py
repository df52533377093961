"""What changed between two catalog snapshots, in words and as a marked-up ER diagram.

`change_summary` gives one line per change, grouped by table (`inv db.diff`, the release
report); `change_diagram` gives the Mermaid diagram of the new schema with the changes marked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from uaip_db.catalog.snapshot import Difference, ObjectKey, Snapshot, differences, is_long
from uaip_db.docs.diagrams import er_diagram, mermaid_text
from uaip_db.docs.model import (
    ON_A_TABLE,
    Schema,
    object_table,
    plural,
    read_schema,
    split_owner,
    value_text,
)


@dataclass(frozen=True, order=True)
class Change:
    """One difference: `table` groups it (empty for objects of the schema itself)."""

    table: str
    text: str
    sign: str = field(compare=False)
    kind: str = field(compare=False)
    name: str = field(compare=False)
    attribute: str = field(default="", compare=False)

    def line(self) -> str:
        return f"{self.table}: {self.text}" if self.table else self.text


def changes(old: Snapshot, new: Snapshot) -> list[Change]:
    """The differences between two snapshots, sorted by table, then by text."""
    old_tables, new_tables = old.tables(), new.tables()
    all_tables = old_tables | new_tables
    # Parts of an added or removed table go with its own line.
    whole_tables = old_tables ^ new_tables
    found = []
    for key, group in groupby(differences(old, new), key=lambda difference: difference.key):
        before, after = old.objects.get(str(key)), new.objects.get(str(key))
        owner = object_table(key.kind, key.name, after or before or {}, all_tables)
        if owner in whole_tables or backs_a_constraint(key.kind, before, after):
            continue
        found += object_changes(key, owner, before, after, list(group), all_tables)
    return sorted(found)


def backs_a_constraint(
    kind: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> bool:
    """An index that implements a constraint: the constraint's own line covers it."""
    sides = [side for side in (before, after) if side is not None]
    return kind == "index" and all(side.get("constraint") for side in sides)


def object_changes(
    key: ObjectKey,
    owner: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    found: list[Difference],
    tables: Iterable[str],
) -> list[Change]:
    """`+`, `-` or one `~` change per attribute; a table's own changes are grouped under it."""
    kind, rest = key.kind, key.name
    name = split_owner(rest, tables)[1] if kind in ON_A_TABLE else rest
    if kind == "table":
        owner = "" if before is None or after is None else rest
    label = kind if kind == "table" and owner else f"{kind} {name}"
    if before is None:
        text = f"+ {label}{added_details(kind, after or {})}"
        return [Change(owner, text, "+", kind, name)]
    if after is None:
        return [Change(owner, f"- {label}", "-", kind, name)]
    return [
        Change(
            owner,
            f"~ {label}{describe_change(kind, d.attribute, d.before, d.after)}",
            "~",
            kind,
            name,
            d.attribute,
        )
        for d in found
    ]


def added_details(kind: str, attributes: Mapping[str, Any]) -> str:
    if kind == "column":
        return " " + column_summary(attributes)
    if kind == "constraint" and attributes.get("definition"):
        return f" {attributes['definition']}"
    return ""


def column_summary(attributes: Mapping[str, Any]) -> str:
    words = [str(attributes.get("type", "?"))]
    if attributes.get("not_null"):
        words.append("NOT NULL")
    if "default" in attributes:
        words.append(f"DEFAULT {attributes['default']}")
    return " ".join(words)


def describe_change(kind: str, attribute: str, old: Any, new: Any) -> str:
    if kind == "column" and attribute == "type":
        return f" {old} -> {new}"
    if attribute == "comment":
        return ": comment " + ("added" if old is None else "removed" if new is None else "changed")
    if kind == "column" and attribute == "not_null":
        return ": now NOT NULL" if new else ": now nullable"
    old_text, new_text = value_text(old), value_text(new)
    if is_long(attribute, old_text, new_text):
        return f": {attribute} changed"
    return f": {attribute} {old_text} -> {new_text}"


def change_summary(old: Snapshot, new: Snapshot) -> list[str]:
    """The schema change from `old` to `new` in words, one line each, grouped by table.

    `sessions: + column email character varying(255)`, `- table foo`,
    `~ function f(uuid): body changed`; empty when the snapshots are equal. Comment changes
    are folded into one line per table (`sessions: ~ comments added on the table and 11 columns`).
    """
    found = changes(old, new)

    def is_comment(change: Change) -> bool:
        return change.attribute == "comment" and change.kind in ("table", "column")

    rows = [(c.table, c.text) for c in found if not is_comment(c)]
    by_table: dict[str, list[Change]] = {}
    for change in filter(is_comment, found):
        by_table.setdefault(change.table, []).append(change)
    for table, group in by_table.items():
        verbs = "/".join(sorted({change.text.rsplit(" ", 1)[-1] for change in group}))
        parts = ["the table"] if any(change.kind == "table" for change in group) else []
        columns = sum(change.kind == "column" for change in group)
        if columns:
            parts.append(plural(columns, "column"))
        rows.append((table, f"~ comments {verbs} on {' and '.join(parts)}"))
    return [f"{table}: {text}" if table else text for table, text in sorted(rows)]


def change_diagram(old: Snapshot, new: Snapshot) -> str:
    """A Mermaid erDiagram of `new` with what changed since `old` marked.

    Added and changed columns carry the note "added" / "changed: <attributes>"; `%%` lines
    name the changed tables and what was removed (GitHub's Mermaid has no reliable styling for
    erDiagram entities, so names stay as they are).
    """
    schema = read_schema(new)
    found = changes(old, new)
    lines = er_diagram(schema, column_notes(found, schema))
    return "\n".join([lines[0], *change_comments(found), *lines[1:]]) + "\n"


def column_notes(found: Sequence[Change], schema: Schema) -> dict[str, dict[str, str]]:
    """table -> column -> "added" or "changed: <attributes>"."""
    notes: dict[str, dict[str, str]] = {}
    changed: dict[tuple[str, str], list[str]] = {}
    for change in found:
        if change.kind == "table" and change.sign == "+":
            table = schema.tables.get(change.name)
            for column in table.columns if table else ():
                notes.setdefault(change.name, {})[column] = "added"
        elif change.kind == "column" and change.sign == "+":
            notes.setdefault(change.table, {})[change.name] = "added"
        elif change.kind == "column" and change.sign == "~":
            changed.setdefault((change.table, change.name), []).append(change.attribute)
    for (table_name, column), attributes in sorted(changed.items()):
        notes.setdefault(table_name, {})[column] = "changed: " + ", ".join(sorted(attributes))
    return notes


def change_comments(found: Sequence[Change]) -> list[str]:
    """`%%` lines: the tables added or changed, and everything removed."""
    added = sorted(c.name for c in found if c.kind == "table" and c.sign == "+")
    changed = sorted({c.table for c in found if c.table})
    removed = sorted(c.line() for c in found if c.sign == "-")
    lines = [f"    %% added table: {name}" for name in added]
    lines += [f"    %% changed table: {name}" for name in changed]
    lines += [f"    %% removed: {mermaid_text(line)}" for line in removed]
    return lines
