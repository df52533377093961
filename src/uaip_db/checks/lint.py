"""`inv db.lint`: every revision rendered to SQL on its own, checked by squawk and by our own rules.

Our rules read the revision file and the committed snapshots before and after it:
- empty-downgrade: downgrade() does nothing and the revision does not say `irreversible = "..."`.
- unacknowledged-data-loss: a table or column disappears (upgrade: without `destroys_data = "..."`;
  downgrade: without `destroys_data_on_downgrade = "..."`).
- type-narrowing: a column gets a narrower type (varchar length, numeric precision) either way.
- blocking-index: CREATE INDEX without CONCURRENTLY on a table that already existed.
- not-null-without-default: an existing table gains a NOT NULL column (or constraint) with no
  default and no backfill in the revision.
- whole-table-update: an UPDATE without WHERE of a table that already existed (one transaction
  locking every row: uaip_db.ops.backfill does it in batches).
- session-set: a SET that lasts for the session (the runner resets it after the revision).
- bookkeeping-table: DROP, ALTER or TRUNCATE of the ledger, the version table or another
  `uaip_db_*` table (the runner refuses a drop; the others would quietly change the records).
Findings about a blocking form (ours and squawk's) name the uaip_db.ops helper that avoids it.
Each finding names the revision file, the line there that wrote the statement, and quotes it.
Exceptions live in migrations/lint-exceptions.toml, each with a reason; a finding no helper
avoids shows the entry that would accept it.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import tomllib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from uaip_db import paths, process
from uaip_db.catalog import expected, trust
from uaip_db.catalog.snapshot import Snapshot
from uaip_db.checks import lint_source
from uaip_db.errors import CheckFailed, SettingsError, UsageError
from uaip_db.migrations import backfill_progress, history, phases, runner, snapshots


@dataclass(frozen=True)
class Finding:
    revision: str
    rule: str
    message: str
    statement: str = ""  # the statement of the rendered SQL, one line, shortened
    function: str = "upgrade"  # which function of the revision wrote it ("" for neither)
    file: str = ""  # migrations/versions/NAME.py
    line: int | None = None  # in `file`: the op call or SQL, else the def line
    exception: str = ""  # the lint-exceptions.toml entry that would accept it, if one fits

    def where(self) -> str:
        if not self.file:
            return ""
        return f"{self.file}:{self.line}" if self.line else self.file

    def headline(self, docs: dict[str, str]) -> str:
        where = f" ({self.where()})" if self.file else ""
        return (
            f"{self.revision} ({docs.get(self.revision, '?')}): [{self.rule}] {self.message}{where}"
        )

    def text(self, docs: dict[str, str]) -> str:
        """The headline, the statement quoted under it, and the exception entry if one fits."""
        lines = [self.headline(docs)]
        if self.statement:
            lines.append(f"    {self.statement}")
        if self.exception:
            lines.append("    to accept it, add to migrations/lint-exceptions.toml:")
            lines.extend(f"        {line}" for line in self.exception.splitlines())
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Exception_:
    rule: str
    reason: str
    revision: str | None

    def covers(self, finding: Finding) -> bool:
        return self.rule == finding.rule and self.revision in (None, finding.revision)


def exceptions_file() -> Path:
    return paths.migrations_dir() / "lint-exceptions.toml"


def load_exceptions(path: Path | None = None) -> list[Exception_]:
    path = path or exceptions_file()
    if not path.is_file():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{path} is not valid TOML: {error}.") from None
    found = []
    for number, entry in enumerate(data.get("exception", []), start=1):
        if not entry.get("rule") or not str(entry.get("reason", "")).strip():
            raise SettingsError(
                f"{path}: exception #{number} needs a rule and a reason (why it is acceptable)."
            )
        found.append(Exception_(entry["rule"], entry["reason"], entry.get("revision")))
    return found


def render_sql(script: history.Revision, downgrade: bool = False) -> str:
    """The SQL of one revision alone, as `alembic upgrade prev:rev --sql` prints it."""
    previous = script.down_revisions[0] if len(script.down_revisions) == 1 else None
    if downgrade:
        return runner.render_sql(script.revision, previous or "base", downgrade=True)
    return runner.render_sql(previous or "base", script.revision)


# What to use instead, after the finding's own text (see docs/MIGRATIONS.md, section 4).
SET_NOT_NULL = (
    "on an existing table use uaip_db.ops.set_not_null (CHECK ... NOT VALID, VALIDATE, "
    "then SET NOT NULL), after uaip_db.ops.backfill fills the column in batches"
)
FOREIGN_KEY = "use uaip_db.ops.add_foreign_key (NOT VALID, then VALIDATE in its own transaction)"
CHECK = (
    "use uaip_db.ops.add_check_constraint(op, table, name, condition) (NOT VALID, then "
    "VALIDATE outside the revision's transaction)"
)
INDEX = "use uaip_db.ops.create_index_concurrently"
PARTIAL_INDEX = (
    'use uaip_db.ops.create_index_concurrently(op, name, table, columns, where="...") '
    "(a partial index, built CONCURRENTLY)"
)
HELPERS = {
    "adding-not-nullable-field": SET_NOT_NULL,
    "adding-foreign-key-constraint": FOREIGN_KEY,
    "require-concurrent-index-creation": INDEX,
    "blocking-index": INDEX,
    "not-null-without-default": "fill it with uaip_db.ops.backfill, then uaip_db.ops.set_not_null",
    "whole-table-update": (
        "use uaip_db.ops.backfill (primary-key batches, one short transaction each, resumable)"
    ),
}


def helper_for(rule: str, statement: str = "") -> str | None:
    """The uaip_db.ops helper that does what `statement` does without the blocking form."""
    words = set(re.findall(r"[a-z]+", lint_source.without_comments(statement).lower()))
    if rule in ("require-concurrent-index-creation", "blocking-index") and "where" in words:
        return PARTIAL_INDEX
    if rule in ("constraint-missing-not-valid", "adding-not-nullable-field") and "check" in words:
        return CHECK
    if rule == "constraint-missing-not-valid":
        if "references" in words or "foreign" in words:
            return FOREIGN_KEY
        return "add it NOT VALID, then VALIDATE CONSTRAINT outside the revision's transaction"
    return HELPERS.get(rule)


def with_helper(rule: str, message: str, statement: str = "") -> str:
    helper = helper_for(rule, statement)
    return f"{message}; {helper}" if helper else message


# Findings whose message says what to change in the revision (not an exception's business).
OWN_REMEDY = {
    "empty-downgrade",
    "unacknowledged-data-loss",
    "missing-snapshot",
    "missing-comment",
    "session-set",
    "bookkeeping-table",
}
# Squawk's rules about dropping what a contract step declares it destroys (destroys_data).
DROP_RULES = {"ban-drop-column", "ban-drop-table"}
# What uaip_db.ops' contract helpers drop: the expand helper's trigger function, named by
# dual_write.dual_write_name (`<table>_<old>_<new>_dual_write`, or hashed to end in `_dw`).
DUAL_WRITE_DROP = re.compile(r"DROP FUNCTION IF EXISTS \w+_(?:dual_write|[0-9a-f]{8}_dw)\(\)")


def exception_for(finding: Finding, script: history.Revision) -> str:
    """The exception entry to show under `finding`: none when a helper or a change to the
    revision is the fix; for a drop, only once the revision says what it destroys (the reason
    taken from `destroys_data`); otherwise with the reason left for the reviewer to write."""
    if finding.rule in OWN_REMEDY or helper_for(finding.rule, finding.statement):
        return ""
    if finding.rule in DROP_RULES:
        if not (finding.function == "upgrade" and script.destroys_data):
            return ""
        return lint_source.exception_entry(script.revision, finding.rule, script.destroys_data)
    return lint_source.exception_entry(script.revision, finding.rule, None)


def placed(finding: Finding, script: history.Revision | None) -> Finding:
    """`finding` with its revision file, the line there, and the exception entry that fits."""
    if script is None:
        return finding
    path = Path(script.path)
    try:
        file = path.resolve().relative_to(paths.project_root()).as_posix()
    except ValueError:
        file = f"migrations/versions/{path.name}"
    line = (
        lint_source.source_line(path, finding.function, finding.statement)
        if finding.function
        else None
    )
    return replace(finding, file=file, line=line, exception=exception_for(finding, script))


def squawk_findings(rendered: dict[str, str], excluded_everywhere: list[str]) -> list[Finding]:
    beside_python = Path(sys.executable).parent / "squawk"
    squawk = str(beside_python) if beside_python.is_file() else shutil.which("squawk")
    if squawk is None:
        raise SettingsError(
            'squawk is not installed; `python -m pip install -e ".[dev]"` brings it (squawk-cli).'
        )
    findings: list[Finding] = []
    with tempfile.TemporaryDirectory(prefix="uaip-lint-") as folder:
        files = []
        for revision, sql in rendered.items():
            file = Path(folder) / f"{revision}.sql"
            file.write_text(sql, encoding="utf-8")
            files.append(str(file))
        exclude = [f"--exclude={','.join(excluded_everywhere)}"] if excluded_everywhere else []
        result = process.execute([squawk, "--reporter", "json", *exclude, *files])
    try:
        reports: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        raise CheckFailed(
            f"squawk failed: {result.stderr.strip() or result.stdout.strip()}"
        ) from None
    for report in reports:
        revision = Path(str(report.get("file", ""))).stem
        rule = str(report.get("rule_name") or report.get("rule") or "squawk")
        line, column = report.get("line"), report.get("column")
        statement = ""
        if isinstance(line, int) and revision in rendered:
            statement = lint_source.statement_at(
                rendered[revision], line, column if isinstance(column, int) else 0
            )
        if rule == "ban-drop-function" and DUAL_WRITE_DROP.search(statement):
            continue  # the rename helpers' own trigger function: no client can call it
        findings.append(
            Finding(
                revision,
                rule,
                with_helper(rule, str(report.get("message", "")).strip(), statement),
                lint_source.quote(statement),
            )
        )
    return findings


def _narrower(before: str, after: str) -> bool:
    old, new = phases.sized(before), phases.sized(after)
    if before == "text" and new and new[0] in ("character varying", "character"):
        return True
    return bool(old and new and old[0] == new[0] and new[1] < old[1])


def snapshot_findings(
    about: history.Revision, before: Snapshot, after: Snapshot, sql: str
) -> list[Finding]:
    revision = about.revision
    findings: list[Finding] = []
    if about.downgrade_missing:
        findings.append(
            Finding(
                revision,
                "empty-downgrade",
                'downgrade() does nothing; write it, or say why not with `irreversible = "..."`',
                function="downgrade",
            )
        )
    old_tables, new_tables = before.tables(), after.tables()
    old_columns, new_columns = before.of_kind("column"), after.of_kind("column")
    lost_up = sorted(old_tables - new_tables) + sorted(
        c for c in old_columns.keys() - new_columns.keys() if c.split(".")[0] in new_tables
    )
    if lost_up and not about.destroys_data:
        findings.append(
            Finding(
                revision,
                "unacknowledged-data-loss",
                f"the upgrade drops {', '.join(lost_up)}; add "
                '`destroys_data = "..."` saying why that is acceptable',
            )
        )
    lost_down = sorted(new_tables - old_tables) + sorted(
        c for c in new_columns.keys() - old_columns.keys() if c.split(".")[0] in old_tables
    )
    if lost_down and not about.destroys_data_on_downgrade:
        findings.append(
            Finding(
                revision,
                "unacknowledged-data-loss",
                f"the downgrade drops {', '.join(lost_down)}; add "
                '`destroys_data_on_downgrade = "..."` naming them',
                function="downgrade",
            )
        )
    for name in sorted(old_columns.keys() & new_columns.keys()):
        old_type, new_type = old_columns[name].get("type", ""), new_columns[name].get("type", "")
        if _narrower(old_type, new_type):
            findings.append(
                Finding(
                    revision,
                    "type-narrowing",
                    f"the upgrade narrows {name} from {old_type} to {new_type}",
                )
            )
        if _narrower(new_type, old_type):
            findings.append(
                Finding(
                    revision,
                    "type-narrowing",
                    f"the downgrade narrows {name} from {new_type} to {old_type}",
                    function="downgrade",
                )
            )
    for match in re.finditer(
        r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?!CONCURRENTLY)(?:IF NOT EXISTS\s+)?(\S+)\s+"
        r"ON\s+(?:ONLY\s+)?"
        r"(?:public\.)?\"?(\w+)\"?",
        sql,
        re.IGNORECASE,
    ):
        if match.group(2) in old_tables:
            statement = lint_source.first_statement(sql[match.start() :], r".")
            findings.append(
                Finding(
                    revision,
                    "blocking-index",
                    with_helper(
                        "blocking-index",
                        f"index {match.group(1)} on existing table {match.group(2)} is "
                        "built without CONCURRENTLY",
                        statement,
                    ),
                    statement,
                )
            )
    findings.extend(
        Finding(
            revision,
            "whole-table-update",
            with_helper(
                "whole-table-update",
                f"UPDATE of every row of existing table {table} in one transaction: every writer "
                "to those rows waits until it commits",
            ),
            lint_source.first_statement(
                sql, rf"^UPDATE\s+(?:ONLY\s+)?(?:public\.)?\"?{re.escape(table)}\"?\s"
            ),
        )
        for table in whole_table_updates(sql, old_tables)
    )
    for name, column in sorted(new_columns.items()):
        table = name.split(".")[0]
        if table not in old_tables or not column.get("not_null") or column.get("default"):
            continue
        if old_columns.get(name, {}).get("not_null"):
            continue
        backfilled = re.search(
            rf"UPDATE\s+(?:public\.)?\"?{re.escape(table)}\"?\s", sql, re.IGNORECASE
        )
        if not backfilled:
            findings.append(
                Finding(
                    revision,
                    "not-null-without-default",
                    with_helper(
                        "not-null-without-default",
                        f"{name} becomes NOT NULL with no default and no backfill; "
                        "existing rows would make it fail",
                    ),
                    lint_source.first_statement(
                        sql,
                        rf"^ALTER\s+TABLE\b.*\b{re.escape(table)}\b.*"
                        rf"\b{re.escape(name.split('.', 1)[1])}\b.*\bNOT\s+NULL\b",
                    ),
                )
            )
    return findings


def whole_table_updates(sql: str, existing: set[str]) -> list[str]:
    """Tables of `existing` that a statement of `sql` updates without a WHERE (a statement
    starts a line, as offline rendering writes them; ops.backfill's batches do not)."""
    found = []
    for match in re.finditer(
        r"^UPDATE\s+(?:ONLY\s+)?(?:public\.)?\"?(\w+)\"?\s+(?:AS\s+\w+\s+)?SET\b([^;]*)",
        sql,
        re.IGNORECASE | re.MULTILINE,
    ):
        if match.group(1) in existing and not re.search(r"\bWHERE\b", match.group(2), re.I):
            found.append(match.group(1))
    return sorted(set(found))


def session_settings(sql: str) -> list[str]:
    """Settings a revision's statements SET for the whole session (not `SET LOCAL`): the
    runner resets them after the revision, so they were meant for its transaction anyway. The
    SETs offline rendering writes before the first transaction are the runner's own."""
    found = re.findall(
        r"(?:\A|;)\s*SET\s+(?:SESSION\s+)?(?!LOCAL\b|TRANSACTION\b|CONSTRAINTS\b)([\w.]+)",
        _revision_statements(sql),
        re.IGNORECASE,
    )
    return sorted({name.lower() for name in found})


def _revision_statements(sql: str) -> str:
    """The revision's own statements in offline SQL (after the runner's SETs), without function
    bodies (which may hold `UPDATE ... SET`) or comments: a statement starts after a `;`."""
    body = sql.split("BEGIN;", 1)[1] if "BEGIN;" in sql else ""
    body = re.sub(r"\$(\w*)\$.*?\$\1\$", "", body, flags=re.DOTALL)
    return re.sub(r"--[^\n]*", "", body)


def bookkeeping_changes(sql: str) -> list[str]:
    """(verb, table) of each DROP, ALTER or TRUNCATE of a bookkeeping table (the ledger, the
    version table: catalog.trust says which) in a revision's statements, as "VERB table"."""
    found = set()
    # uaip_db.ops.backfill's offline SQL brings its progress table up to date: ours, not theirs.
    sql = sql.replace(backfill_progress.ADD_DEFINITION, "")
    for match in re.finditer(
        r"(?:\A|;)\s*(DROP\s+TABLE|ALTER\s+TABLE|TRUNCATE)(?:\s+TABLE)?(?:\s+IF\s+EXISTS)?"
        r"(?:\s+ONLY)?\s+([^;]*)",
        _revision_statements(sql),
        re.IGNORECASE,
    ):
        verb = " ".join(match.group(1).upper().split())
        targets = match.group(2)
        # DROP and TRUNCATE take a list of tables; ALTER TABLE one.
        names = targets.split(",") if verb != "ALTER TABLE" else [targets]
        for name in names:
            words = name.split()
            table = words[0].split(".")[-1].strip('"') if words else ""
            if trust.is_bookkeeping(table):
                found.add(f"{verb} {table}")
    return sorted(found)


def phase_findings(chain: list[history.Revision]) -> list[Finding]:
    """A revision that says `phase = "expand"` but whose schema change the previous release
    would trip over; a phase that is neither expand nor contract."""
    found = []
    for script in chain:
        if script.phase is not None and script.phase not in phases.PHASES:
            found.append(
                Finding(
                    script.revision,
                    "phase",
                    f'phase = "{script.phase}" is neither "expand" nor "contract"',
                )
            )
            continue
        judgement = phases.judge(script)
        if judgement.contradicted:
            found.append(
                Finding(
                    script.revision,
                    "phase",
                    f'says phase = "expand", but it {"; ".join(judgement.changes)}: the previous '
                    'release of the application would break. Mark it phase = "contract", and '
                    "deploy the application that no longer uses it first",
                )
            )
    return found


def coverage_findings(head: str) -> list[Finding]:
    """Every table and column at head must say what it holds (a COMMENT ON)."""
    from uaip_db.docs.model import missing_comments

    try:
        snapshot = expected.snapshot(head)
    except CheckFailed:
        return []
    return [
        Finding(
            head,
            "missing-comment",
            f"{item} has no comment; add COMMENT ON in a revision",
            function="",
        )
        for item in missing_comments(snapshot)
    ]


def lint(since: str | None = None) -> tuple[list[Finding], list[str], dict[str, str]]:
    """(findings left after exceptions, notes, revision docs)."""
    index = history.load()
    stale = snapshots.staleness()
    if stale:
        raise CheckFailed(stale)
    chain = list(index.order)
    docs = {s.revision: s.doc for s in chain}
    ids = [s.revision for s in chain]
    if since:
        try:
            resolved = index.resolve(since)
        except UsageError:
            resolved = ""
        if resolved not in ids:
            raise UsageError(
                f"Unknown revision {since!r} for --since; `inv db.history` lists them."
            )
        chain = chain[ids.index(resolved) + 1 :]
    exceptions = load_exceptions()
    global_rules = [e.rule for e in exceptions if e.revision is None]
    # A merge only joins heads: rendered on its own it would be the SQL from base.
    rendered = {s.revision: render_sql(s) for s in chain if not s.is_merge}
    findings = squawk_findings(rendered, global_rules) if rendered else []
    for script in chain:
        if script.is_merge:
            continue
        previous = script.down_revisions[0] if script.down_revisions else expected.BASE
        try:
            before, after = expected.snapshot(previous), expected.snapshot(script.revision)
        except CheckFailed:
            findings.append(
                Finding(
                    script.revision,
                    "missing-snapshot",
                    "no committed snapshot; run `inv db.snapshots` and commit it",
                    function="",
                )
            )
            continue
        findings.extend(snapshot_findings(script, before, after, rendered[script.revision]))
        findings.extend(
            Finding(
                script.revision,
                "session-set",
                f"SET {name} lasts for the session, not this revision's transaction; write "
                f"SET LOCAL {name} (the runner resets session settings after each revision)",
                lint_source.first_statement(
                    rendered[script.revision].split("BEGIN;", 1)[-1],
                    rf"^SET\s+(?:SESSION\s+)?{re.escape(name)}\b",
                ),
            )
            for name in session_settings(rendered[script.revision])
        )
        findings.extend(
            Finding(
                script.revision,
                "bookkeeping-table",
                f"{change}: the project's bookkeeping tables are not a revision's to drop or "
                "alter (the ledger records which revision files were applied); remove it",
                lint_source.first_statement(
                    _revision_statements(rendered[script.revision]),
                    rf"^{change.split()[0]}\b.*\b{re.escape(change.split()[-1])}\b",
                ),
            )
            for change in bookkeeping_changes(rendered[script.revision])
        )
    findings.extend(phase_findings(chain))
    if chain and chain[-1].revision == ids[-1]:
        findings.extend(coverage_findings(chain[-1].revision))
    by_id = {s.revision: s for s in index.order}
    kept = [
        placed(f, by_id.get(f.revision))
        for f in findings
        if not any(e.covers(f) for e in exceptions)
    ]
    used = {id(e) for e in exceptions for f in findings if e.covers(f)} | {
        id(e) for e in exceptions if e.revision is None
    }
    notes = [
        f"lint-exceptions.toml: the exception for {e.rule} in {e.revision} "
        "no longer matches anything"
        for e in exceptions
        if id(e) not in used and (since is None or e.revision in rendered)
    ]
    unmarked = [s for s in chain if s.phase is None]
    if unmarked:
        notes.append(
            "Without a phase = marker, judged from their schema change: "
            + ", ".join(f"{s.revision} {phases.phase_of(s)}" for s in unmarked)
        )
    return (
        sorted(kept, key=lambda f: (ids.index(f.revision) if f.revision in ids else -1, f.rule)),
        notes,
        docs,
    )
