"""Where a `db.lint` finding comes from: the statement of a revision's rendered SQL that squawk
points at, the line of the revision file that wrote it, and the exception entry that would
accept it (migrations/lint-exceptions.toml)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

QUOTE_WIDTH = 120


def statement_spans(sql: str) -> list[tuple[int, int]]:
    """(start, end) of each statement of `sql`: a `;` ends one unless it is inside quotes, a
    dollar-quoted body or a comment."""
    spans = []
    start = position = 0
    length = len(sql)
    while position < length:
        char = sql[position]
        if char == "-" and sql.startswith("--", position):
            newline = sql.find("\n", position)
            position = length if newline < 0 else newline + 1
            continue
        if char in "'\"":
            closing = sql.find(char, position + 1)
            while closing >= 0 and sql.startswith(char * 2, closing):
                closing = sql.find(char, closing + 2)
            position = length if closing < 0 else closing + 1
            continue
        if char == "$":
            tag = re.match(r"\$(?:[A-Za-z_]\w*)?\$", sql[position:])
            if tag:
                closing = sql.find(tag.group(0), position + len(tag.group(0)))
                position = length if closing < 0 else closing + len(tag.group(0))
                continue
        if char == ";":
            spans.append((start, position + 1))
            start = position + 1
        position += 1
    if sql[start:].strip():
        spans.append((start, length))
    return spans


def without_comments(statement: str) -> str:
    """The statement without its `--` comment lines (the runner's `-- Running upgrade`, a
    helper's `-- squawk-ignore`)."""
    lines = [line for line in statement.splitlines() if not line.strip().startswith("--")]
    return "\n".join(lines).strip()


def statement_at(sql: str, line: int, column: int) -> str:
    """The statement of `sql` at squawk's 0-based `line` and `column` ("" when none is)."""
    lines = sql.splitlines(keepends=True)
    if not 0 <= line < len(lines):
        return ""
    offset = sum(len(text) for text in lines[:line]) + max(column, 0)
    for start, end in statement_spans(sql):
        if start <= offset < end:
            return without_comments(sql[start:end])
    return ""


def quote(statement: str, width: int = QUOTE_WIDTH) -> str:
    """One line of at most `width` characters."""
    flat = " ".join(without_comments(statement).split()).rstrip(";").rstrip()
    return flat if len(flat) <= width else flat[: width - 3].rstrip() + "..."


def _words(text: str) -> set[str]:
    return {word.lower() for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)}


def _simple_statements(function: ast.FunctionDef) -> list[ast.stmt]:
    """The statements of `function` that are not blocks (calls, assignments), nested ones too."""
    return [
        node
        for node in ast.walk(function)
        if isinstance(node, ast.stmt) and not hasattr(node, "body") and node is not function
    ]


def source_line(path: Path, function: str, statement: str) -> int | None:
    """The line of `path` where `function` (upgrade or downgrade) writes `statement`: the
    statement of its body that shares the most distinctive words with it (an object's name
    counts for more than a word every statement has), else the `def` line; None when the file
    cannot be read."""
    try:
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
    except (OSError, SyntaxError, ValueError):
        return None
    defs = [
        node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == function
    ]
    if not defs:
        return None
    body = _simple_statements(defs[0])
    wanted = _words(without_comments(statement))
    if not wanted or not body:
        return defs[0].lineno
    texts = [_words(ast.get_source_segment(source, node) or "") for node in body]
    shared = [wanted & words for words in texts]
    counts: dict[str, int] = {}
    for words in shared:
        for word in words:
            counts[word] = counts.get(word, 0) + 1
    scores = [sum(1 / counts[word] for word in words) for words in shared]
    best = max(range(len(body)), key=lambda index: (scores[index], -index))
    return body[best].lineno if scores[best] > 0 else defs[0].lineno


def _toml_string(text: str) -> str:
    # A JSON string is a TOML basic string (same escapes) once it is one line.
    return json.dumps(" ".join(text.split()), ensure_ascii=False)


def exception_entry(revision: str, rule: str, reason: str | None) -> str:
    """The migrations/lint-exceptions.toml entry that accepts `rule` in `revision`. Without a
    reason it is left empty, and `db.lint` refuses the file until someone writes one."""
    lines = [
        "[[exception]]",
        f"revision = {_toml_string(revision)}",
        f"rule = {_toml_string(rule)}",
    ]
    if reason and reason.strip():
        lines.append(f"reason = {_toml_string(reason)}")
    else:
        lines.append('reason = ""  # why it is acceptable here: db.lint refuses an empty one')
    return "\n".join(lines)


def first_statement(sql: str, pattern: str) -> str:
    """The first statement of `sql` (without comments) that `pattern` finds, one line,
    shortened ("" when none does)."""
    for start, end in statement_spans(sql):
        statement = without_comments(sql[start:end])
        if re.search(pattern, statement, re.IGNORECASE | re.DOTALL):
            return quote(statement)
    return ""
