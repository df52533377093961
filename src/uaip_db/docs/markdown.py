"""docs/schema/README.md: the schema in Markdown, rendered from a catalog snapshot (like tbls).

`render` is a pure function of a `Snapshot`: the same snapshot gives byte-identical files, so
committed docs can be checked in CI the way committed snapshots are. The README ends with the
Mermaid ER diagram GitHub draws (see `diagrams`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from uaip_db.catalog.snapshot import ObjectKey, Snapshot
from uaip_db.docs.diagrams import er_diagram
from uaip_db.docs.model import (
    Column,
    NamedDefinition,
    Schema,
    Table,
    plural,
    read_schema,
    value_text,
)
from uaip_db.docs.output import GENERATED_NOTE
from uaip_db.text import inert_markdown, visible

DEFAULT_TITLE = "UAIP Scoping database schema"
README = "README.md"


# --- Markdown helpers ---------------------------------------------------------------------------


def github_slug(text: str) -> str:
    """The anchor GitHub gives a heading (before it numbers duplicates)."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def heading_anchors(headings: Sequence[str]) -> list[str]:
    """Anchors of headings in document order, numbered as GitHub numbers duplicates."""
    seen: dict[str, int] = {}
    anchors = []
    for heading in headings:
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.append(slug if count == 0 else f"{slug}-{count}")
    return anchors


def prose(text: str) -> str:
    """Free text (a comment) made safe for Markdown: no raw HTML, no remote image, control
    characters visible."""
    return inert_markdown(text)


def code(text: str) -> str:
    """An inline code span that holds any text, backticks included, on one line."""
    if not text:
        return ""
    text = visible(" ".join(text.split("\n")))
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    padding = " " if text.startswith("`") or text.endswith("`") or longest else ""
    return f"{fence}{padding}{text}{padding}{fence}"


def code_block(text: str, language: str = "") -> list[str]:
    text = visible(text)
    longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=2)
    fence = "`" * (longest + 1)
    return [f"{fence}{language}", *text.splitlines(), fence]


def mermaid_block(lines: Sequence[str]) -> list[str]:
    return ["```mermaid", *lines, "```"]


def cell(text: str) -> str:
    """Text for a Markdown table cell: pipes escaped, line breaks kept as <br>."""
    return text.replace("|", "\\|").replace("\r\n", "\n").replace("\n", "<br>")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return lines


def codes(names: Iterable[str]) -> str:
    return ", ".join(code(name) for name in names)


def comment_text(comment: str | None) -> str:
    return prose(comment) if comment else ""


# --- the README -------------------------------------------------------------------------------


def render(
    snapshot: Snapshot,
    title: str = DEFAULT_TITLE,
    revision: str | None = None,
    sources: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The documentation files (name -> text) for docs/schema/; `sources` (revision -> sha256
    of its file) records what they were built from."""
    return {README: render_readme(snapshot, title, revision, sources or {})}


def render_readme(
    snapshot: Snapshot, title: str, revision: str | None, sources: Mapping[str, str] | None = None
) -> str:
    schema = read_schema(snapshot)
    tables = schema.sorted_tables()
    anchors = dict(zip([t.name for t in tables], table_anchors(title, tables), strict=True))
    sections = [
        header_section(schema, title, revision) + sources_comment(sources or {}),
        contents_section(tables, anchors),
        *(table_section(table, schema, anchors) for table in tables),
        routines_section(schema),
        extensions_section(schema),
        others_section(schema),
        ["## Entity-relationship diagram", "", *mermaid_block(er_diagram(schema))],
    ]
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


SOURCES_HEADING = "Built from these revision files (sha256), base first:"


def sources_comment(sources: Mapping[str, str]) -> list[str]:
    if not sources:
        return []
    lines = [f"{revision} {digest}" for revision, digest in sources.items()]
    return ["", f"<!-- {SOURCES_HEADING}", *lines, "-->"]


def recorded_sources(readme: str) -> dict[str, str]:
    """What a rendered README says it was built from (revision -> sha256)."""
    _, found, rest = readme.partition(f"<!-- {SOURCES_HEADING}\n")
    if not found:
        return {}
    recorded = {}
    for line in rest.partition("-->")[0].splitlines():
        revision, _, digest = line.strip().partition(" ")
        if digest:
            recorded[revision] = digest
    return recorded


def table_anchors(title: str, tables: Sequence[Table]) -> list[str]:
    """The anchors of the table headings (the headings before them can take their slugs)."""
    headings = [title, "Tables", *(table.name for table in tables)]
    return heading_anchors(headings)[2:]


def header_section(schema: Schema, title: str, revision: str | None) -> list[str]:
    described = f"Alembic revision {code(revision)}" if revision else "an unnamed revision"
    counts = ", ".join(
        plural(len(items), noun)
        for items, noun in (
            (schema.tables, "table"),
            (schema.routines, "function"),
            (schema.extensions, "extension"),
        )
    )
    return [
        f"<!-- {GENERATED_NOTE} -->",
        f"# {title}",
        "",
        f"The schema at {described}: {counts}.",
    ]


def contents_section(tables: Sequence[Table], anchors: Mapping[str, str]) -> list[str]:
    rows = [
        [f"[{table.name}](#{anchors[table.name]})", str(len(table.columns)), first_line(table)]
        for table in tables
    ]
    return [
        "## Tables",
        "",
        *markdown_table(["Table", "Columns", "Comment"], rows),
        "",
        "Also: [Functions](#functions) · [Extensions](#extensions) · "
        "[Entity-relationship diagram](#entity-relationship-diagram)",
    ]


def first_line(table: Table) -> str:
    return comment_text(table.comment.splitlines()[0]) if table.comment else ""


def table_section(table: Table, schema: Schema, anchors: Mapping[str, str]) -> list[str]:
    parts = [
        [f"### {table.name}"],
        [prose(table.comment)] if table.comment else [],
        columns_part(table),
        primary_key_part(table),
        unique_part(table),
        foreign_keys_part(table, anchors),
        referenced_by_part(table, schema, anchors),
        definitions_part(table, "check", "Check constraints"),
        definitions_part(table, "exclusion", "Exclusion constraints"),
        indexes_part(table),
        triggers_part(table),
    ]
    return "\n\n".join("\n".join(part) for part in parts if part).split("\n")


def columns_part(table: Table) -> list[str]:
    rows = [
        [
            code(column.name),
            code(column_type(column)),
            "yes" if column.nullable else "no",
            column_default(column),
            comment_text(column.comment),
        ]
        for column in table.ordered_columns()
    ]
    if not rows:
        return ["No columns."]
    return markdown_table(["Column", "Type", "Nullable", "Default", "Comment"], rows)


def column_type(column: Column) -> str:
    collation = column.attributes.get("collation")
    return f"{column.type} COLLATE {collation}" if collation else column.type


def column_default(column: Column) -> str:
    attributes = column.attributes
    if attributes.get("identity"):
        return f"generated {attributes['identity']} as identity"
    if attributes.get("generated"):
        return f"generated always as {code(str(attributes['generated']))} stored"
    return code(str(attributes["default"])) if "default" in attributes else ""


def primary_key_part(table: Table) -> list[str]:
    key = table.primary_key
    if key is None:
        return ["**Primary key:** none"]
    return [f"**Primary key:** {code(key.name)} ({codes(key.key_columns)})"]


def unique_part(table: Table) -> list[str]:
    rows = [
        [code(c.name), codes(c.key_columns) or code(c.definition), comment_text(c.comment)]
        for c in table.constraints_of_kind("unique")
    ]
    return titled_table("Unique constraints", ["Name", "Columns", "Comment"], rows)


def foreign_keys_part(table: Table, anchors: Mapping[str, str]) -> list[str]:
    rows = [
        [
            code(key.name),
            codes(key.columns),
            f"{table_link(key.target, anchors)} ({codes(key.target_columns)})",
            code(key.actions) if key.actions else "",
            comment_text(key.comment),
        ]
        for key in table.foreign_keys
    ]
    headers = ["Name", "Columns", "References", "Actions", "Comment"]
    return titled_table("Foreign keys", headers, rows)


def table_link(name: str, anchors: Mapping[str, str]) -> str:
    return f"[{name}](#{anchors[name]})" if name in anchors else code(name)


def referenced_by_part(table: Table, schema: Schema, anchors: Mapping[str, str]) -> list[str]:
    references = [
        f"{table_link(key.table, anchors)} ({codes(key.columns)})"
        for key in schema.foreign_keys()
        if key.target == table.name
    ]
    return [f"**Referenced by:** {', '.join(references)}"] if references else []


def definitions_part(table: Table, kind: str, title: str) -> list[str]:
    rows = [
        [code(c.name), code(c.definition), comment_text(c.comment)]
        for c in table.constraints_of_kind(kind)
    ]
    return titled_table(title, ["Name", "Definition", "Comment"], rows)


def indexes_part(table: Table) -> list[str]:
    rows = [
        [code(name), code(index.definition) + validity(index), comment_text(index.comment)]
        for name, index in sorted(table.indexes.items())
    ]
    return titled_table("Indexes", ["Name", "Definition", "Comment"], rows)


def validity(index: NamedDefinition) -> str:
    return " (INVALID)" if index.attributes.get("valid") is False else ""


def triggers_part(table: Table) -> list[str]:
    rows = [
        [
            code(name),
            code(trigger.definition) + trigger_state(trigger),
            comment_text(trigger.comment),
        ]
        for name, trigger in sorted(table.triggers.items())
    ]
    return titled_table("Triggers", ["Name", "Definition", "Comment"], rows)


def trigger_state(trigger: NamedDefinition) -> str:
    state = trigger.attributes.get("state", "enabled")
    return "" if state == "enabled" else f" ({state})"


def titled_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A bold title over a table; the Comment column is left out when no row has one."""
    if not rows:
        return []
    if headers[-1] == "Comment" and not any(row[-1] for row in rows):
        headers, rows = headers[:-1], [row[:-1] for row in rows]
    return [f"**{title}**", "", *markdown_table(headers, rows)]


def routines_section(schema: Schema) -> list[str]:
    if not schema.routines:
        return ["## Functions", "", "None."]
    routines = sorted(schema.routines.items())
    rows = [routine_row(key, attributes) for key, attributes in routines]
    headers = ["Function", "Returns", "Language", "Volatility", "Comment"]
    lines = ["## Functions", "", *markdown_table(headers, rows)]
    for key, attributes in routines:
        if attributes.get("body"):
            lines += ["", *routine_body(key, attributes)]
    return lines


def routine_row(key: str, attributes: Mapping[str, Any]) -> list[str]:
    return [
        code(routine_signature(key, attributes)),
        code(str(attributes.get("result", ""))) if attributes.get("result") else "",
        str(attributes.get("language", "")),
        str(attributes.get("volatility", "")),
        comment_text(attributes.get("comment")),
    ]


def routine_signature(key: str, attributes: Mapping[str, Any]) -> str:
    """`function get_session_progress(uuid)` -> `get_session_progress(p_session_id uuid)`."""
    parsed = ObjectKey.parse(key)
    kind, rest = parsed.kind, parsed.name
    name = rest.partition("(")[0]
    prefix = "" if kind == "function" else f"{kind} "
    return f"{prefix}{name}({attributes.get('arguments', '')})"


def routine_body(key: str, attributes: Mapping[str, Any]) -> list[str]:
    language = "sql" if attributes.get("language") in ("sql", "plpgsql") else ""
    summary = f"<code>{html.escape(ObjectKey.parse(key).name)}</code> body"
    return [
        f"<details><summary>{summary}</summary>",
        "",
        *code_block(str(attributes["body"]), language),
        "",
        "</details>",
    ]


def extensions_section(schema: Schema) -> list[str]:
    rows = [
        [
            code(name),
            str(attributes.get("version", "")),
            code(str(attributes.get("schema", ""))),
            comment_text(attributes.get("comment")),
        ]
        for name, attributes in sorted(schema.extensions.items())
    ]
    headers = ["Extension", "Version", "Schema", "Comment"]
    return ["## Extensions", "", *(markdown_table(headers, rows) if rows else ["None."])]


def others_section(schema: Schema) -> list[str]:
    """Views, sequences, enums and schemas: one row each, only when the snapshot has any."""
    rows = [
        [code(key), other_details(attributes), comment_text(attributes.get("comment"))]
        for key, attributes in sorted(schema.others.items())
    ]
    if not rows:
        return []
    return ["## Other objects", "", *markdown_table(["Object", "Details", "Comment"], rows)]


def other_details(attributes: Mapping[str, Any]) -> str:
    shown = {name: value for name, value in sorted(attributes.items()) if name != "comment"}
    return "<br>".join(f"{name}: {code(value_text(value))}" for name, value in shown.items())
