"""The SQL of a release, read back: statements per revision, and a digest a person can read.

`runner.render_sql` gives what `alembic upgrade a:b --sql` prints. The full text goes into the
report's appendix file; the report itself shows, per revision, each statement on one line with
runs of documentation-only statements (`COMMENT ON`) folded into one line, and the guards (DO
blocks that raise) by the message they raise with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

RUNNING = re.compile(r"^-- Running (upgrade|downgrade) (\S*) -> (\S+)\s*$")
BOOKKEEPING = re.compile(
    r"^(SET |BEGIN|COMMIT|UPDATE alembic_version |INSERT INTO alembic_version )"
)
DOCUMENTATION = re.compile(r"^COMMENT ON ", re.IGNORECASE)
RAISES = re.compile(r"RAISE\s+EXCEPTION\s+'((?:[^']|'')*)'", re.IGNORECASE)
# What a DO block that changes something runs (outside its quoted strings).
WRITES = re.compile(
    r"\b(?:UPDATE|INSERT|DELETE|MERGE|EXECUTE|PERFORM|COMMIT|ALTER|CREATE|DROP|TRUNCATE)\b",
    re.IGNORECASE,
)
QUOTED = re.compile(r"'(?:[^']|'')*'")
DOLLAR_TAG = re.compile(r"\$[A-Za-z_]*\$")
PLACEHOLDER = re.compile(r"%%|%")
LINE_CHARS = 140


@dataclass
class Step:
    """One revision's part of the SQL: `start -> end`, and its statements (bookkeeping out)."""

    direction: str
    start: str
    end: str
    statements: list[str] = field(default_factory=list)

    @property
    def revision(self) -> str:
        """The revision whose upgrade or downgrade this is."""
        return self.end if self.direction == "upgrade" else self.start

    def guards(self) -> list[str]:
        """What each guard refuses, in its own words: a DO block that raises and changes
        nothing (a backfill's or a helper's DO block that also writes is no guard)."""
        found = []
        for statement in self.statements:
            if statement.upper().startswith("DO "):
                raised = RAISES.search(statement)
                if raised and not WRITES.search(QUOTED.sub("''", statement)):
                    found.append(_readable(raised.group(1)))
        return found


def _readable(message: str) -> str:
    """A RAISE message as people read it: `''` is a quote, `%%` a percent sign, `%` a number."""
    text = message.replace("''", "'")
    return PLACEHOLDER.sub(lambda found: "%" if found.group(0) == "%%" else "N", text)


def statements(text: str) -> list[str]:
    """Split SQL into statements at top-level semicolons (quotes, dollar quotes and comments
    respected); comment-only lines are kept as statements of their own, starting with `--`."""
    found: list[str] = []
    current: list[str] = []
    i, quote = 0, ""
    while i < len(text):
        char = text[i]
        if quote:
            if text.startswith(quote, i):
                current.append(quote)
                i += len(quote)
                quote = ""
                continue
            current.append(char)
            i += 1
            continue
        if char == "'":
            quote = "'"
        elif char == "$" and (tag := DOLLAR_TAG.match(text, i)):
            quote = tag.group(0)
            current.append(quote)
            i += len(quote)
            continue
        elif text.startswith("--", i):
            end = text.find("\n", i)
            end = len(text) if end == -1 else end
            if not "".join(current).strip():
                found.append(text[i:end].strip())
            i = end
            continue
        elif char == ";":
            _add(found, current)
            current = []
            i += 1
            continue
        current.append(char)
        i += 1
    _add(found, current)
    return found


def _add(found: list[str], current: list[str]) -> None:
    statement = "".join(current).strip()
    if statement:
        found.append(statement)


def steps(text: str) -> list[Step]:
    """The SQL's revisions, in order, each with its own statements."""
    found: list[Step] = []
    for statement in statements(text):
        running = RUNNING.match(statement)
        if running:
            direction, start, end = running.groups()
            found.append(Step(direction, start, end))
        elif found and not statement.startswith("--") and not BOOKKEEPING.match(statement):
            found[-1].statements.append(statement)
    return found


def one_line(statement: str, limit: int = LINE_CHARS) -> str:
    flat = " ".join(statement.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def digest(step: Step) -> list[str]:
    """Markdown lines: each statement once, documentation-only runs folded, guards by message."""
    lines: list[str] = []
    run: list[str] = []

    def fold() -> None:
        if len(run) == 1:
            lines.append(f"  - `{one_line(run[0])}`")
        elif run:
            lines.append(
                f"  - {len(run)} `COMMENT ON` statements (documentation only), the first: "
                f"`{one_line(run[0])}`"
            )
        run.clear()

    for statement in step.statements:
        if DOCUMENTATION.match(statement):
            run.append(statement)
            continue
        fold()
        raised = Step(step.direction, step.start, step.end, [statement]).guards()
        if raised:
            lines.append(f"  - guard (a DO block that stops here and changes nothing): {raised[0]}")
        else:
            lines.append(f"  - `{one_line(statement)}`")
    fold()
    return lines or ["  - no statements"]


def count(text: str) -> int:
    """How many statements the revisions run (transaction control and bookkeeping left out)."""
    return sum(len(step.statements) for step in steps(text))
