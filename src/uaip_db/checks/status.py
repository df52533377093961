"""The gate for CI and for application start-up: is the database at head, and can we trust it?
And what `db.status` shows: where the database is, and every setting in effect.

Exit codes of `inv db.check`: 0 at head; 3 when revisions are pending; 1 when something is wrong
(an unknown revision, several heads, a downgrade that silently does nothing, an applied migration
edited after it ran).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uaip_db.catalog import expected, trust
from uaip_db.catalog.snapshot import DEFAULT_SCHEMAS, Snapshot, diff, take_from
from uaip_db.checks.verify import edited_revisions
from uaip_db.errors import (
    CHECK_FAILED,
    PENDING,
    CheckFailed,
    DatabaseBusy,
    PendingMigrations,
    SettingsError,
    UaipDbError,
)
from uaip_db.migrations import applied, history, ledger, phases, snapshots
from uaip_db.pg import invalid_indexes, reading
from uaip_db.settings import (
    CONNECTION_NAMES,
    DATABASE_URL,
    DEFAULT,
    POSTGRES_URL,
    SETTINGS,
    DatabaseConfig,
    Setting,
    parse_database_url,
    raw_setting,
)

if TYPE_CHECKING:
    import psycopg

    pass


@dataclass
class MigrationStatus:
    database: str
    current: list[str]
    heads: list[str]
    pending: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Revisions the database has and these scripts do not, all expand ones (the ledger says):
    # the previous release runs on the schema a newer release expanded.
    ahead: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.problems:
            return CHECK_FAILED
        return PENDING if self.pending else 0

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "exit_code": self.exit_code}, indent=2)

    def summary(self) -> str:
        at = ", ".join(self.current) or "base"
        if self.problems:
            return "\n".join(["Migration check failed:", *(f"  - {p}" for p in self.problems)])
        if self.pending:
            lines = [f"{self.database} is at {at}; {len(self.pending)} revision(s) pending:"]
            lines += [f"  {p}" for p in self.pending]
            lines.append("Run `inv db.upgrade`.")
            return "\n".join(lines)
        if self.ahead:
            return (
                f"{self.database} is at {at}, ahead of these scripts' head {', '.join(self.heads)} "
                f"by expand revision(s) only ({', '.join(self.ahead)}): this release of the "
                "application runs on it."
            )
        return f"{self.database} is at head {at}; the migration scripts check out."


def inspect(database: DatabaseConfig, index: history.ScriptIndex | None = None) -> MigrationStatus:
    """The database against the scripts (`index`: another release's own copy of them)."""
    index = index or history.load()
    with reading(database) as conn:
        trust.check_bookkeeping(conn, DEFAULT_SCHEMAS)
        current = list(applied.current_revisions_on(conn))
        recorded = ledger.entries(conn)
        invalid = invalid_indexes(conn)
        actual = take_from(conn) if len(current) == 1 else None
        unrecorded = not current and has_tables(conn)
    status = MigrationStatus(database=database.display_url(), current=current, heads=index.heads)
    status.problems.extend(index.problems)
    unknown = [revision for revision in current if index.get(revision) is None]
    if unknown:
        ahead, refused = compatibility_window(index, recorded, unknown)
        status.ahead = ahead
        status.problems.extend(refused)
    else:
        status.pending = [f"{r.revision} {r.doc}" for r in index.pending(current)]
    status.problems.extend(
        edited_revisions({r: e for r, e in recorded.items() if index.get(r) is not None}, index)
    )
    if unrecorded:
        status.problems.append(
            "The database has tables but no recorded revision (built from init.sql?); record "
            "the revision it matches with `inv db.stamp --rev auto`, then run `inv db.upgrade`."
        )
    status.problems.extend(
        f"Index {name} is INVALID (a CONCURRENTLY build or drop that failed half-way); "
        f"drop it (DROP INDEX CONCURRENTLY {name}) and run `inv db.upgrade` again."
        for name in invalid
    )
    if actual is not None and not unknown:
        status.problems.extend(schema_problems(current[0], actual))
    return status


def compatibility_window(
    index: history.ScriptIndex, recorded: dict[str, ledger.Entry], unknown: list[str]
) -> tuple[list[str], list[str]]:
    """A database at revisions these scripts do not know: (the expand revisions it is ahead by,
    when that is all it is ahead by, else the problems). The application's own copy of the
    scripts decides; the phases come from the ledger, where the runner recorded them."""
    beyond, contract = phases.beyond_scripts(
        index, {revision: entry.phase for revision, entry in recorded.items()}
    )
    if not set(index.heads) <= set(recorded) or not set(unknown) <= set(beyond):
        return [], [str(history.unknown_revision(revision)) for revision in unknown]
    if contract:
        what = ", ".join(f"{r} ({recorded[r].phase or 'phase not recorded'})" for r in contract)
        return [], [
            f"The database is ahead of these scripts' head {', '.join(index.heads)} by "
            f"{what}, which this release of the application does not survive: deploy the "
            "release that has it (only expand revisions may run ahead of an application)."
        ]
    return [f"{r} (expand)" for r in beyond], []


def schema_problems(revision: str, actual: Snapshot) -> list[str]:
    """The live schema against its revision's committed snapshot: one digest comparison."""
    stale = snapshots.staleness(revision)
    if stale:
        return [stale]
    wanted = expected.snapshot(revision)
    if actual.digest() == wanted.digest():
        return []
    found = diff(wanted, actual)
    return [
        f"The schema is not revision {revision}'s ({len(found)} difference(s), first: "
        f"{found[0]}); `inv db.verify` lists them."
    ]


def has_tables(conn: psycopg.Connection[Any]) -> bool:
    """Whether the public schema holds tables besides the bookkeeping ones."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'public' "
        "AND tablename NOT LIKE 'alembic\\_version%%' AND tablename NOT LIKE 'uaip\\_db\\_%%')"
    ).fetchone()
    return bool(row and row[0])


@dataclass(frozen=True)
class DatabaseState:
    """Where a database is, for `db.status` and `db.current` (`--json` prints `to_json()`)."""

    database: str
    env: str
    reachable: bool
    error: str | None
    current: list[str]
    heads: list[str]
    pending: list[dict[str, str]]
    unknown: list[str]
    server_version: str | None = None  # "16.15", as the server reports it
    # Not read because another session held a lock it needed: the server answered.
    busy: bool = False

    @property
    def at_head(self) -> bool:
        return self.reachable and bool(self.current) and sorted(self.current) == self.heads

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "at_head": self.at_head}, indent=2)


def database_state(database: DatabaseConfig) -> DatabaseState:
    """The database's revision and what is pending; an unreachable one says why instead."""

    index = history.load()
    try:
        with reading(database) as conn:
            current = list(applied.current_revisions_on(conn))
            server_version = conn.info.parameter_status("server_version")
    except UaipDbError as error:
        return DatabaseState(
            database.display_url(),
            database.env,
            False,
            str(error),
            [],
            index.heads,
            [],
            [],
            busy=isinstance(error, DatabaseBusy),
        )
    unknown = [revision for revision in current if index.get(revision) is None]
    pending = [] if unknown else index.pending(current)
    return DatabaseState(
        database.display_url(),
        database.env,
        True,
        None,
        current,
        index.heads,
        [{"revision": item.revision, "doc": item.doc} for item in pending],
        unknown,
        server_version,
    )


@dataclass(frozen=True)
class EffectiveSetting:
    """A setting as it is in effect: its value as people may see it (passwords masked), where it
    came from, and, when the value is refused, the one line saying why."""

    name: str
    value: str
    source: str
    problem: str | None = None
    note: str | None = None

    @property
    def is_default(self) -> bool:
        return self.source == DEFAULT

    def summary(self) -> str:
        said = f"{self.name}={self.value} ({self.source}{', ' + self.note if self.note else ''})"
        return said + (f"; refused: {self.problem}" if self.problem else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "source": self.source,
            "problem": self.problem,
            "note": self.note,
        }


def effective_settings(
    environ: Mapping[str, str] | None = None, dotenv_path: Path | None = None
) -> tuple[EffectiveSetting, ...]:
    """Every setting of the table, in its order, as it is in effect (`inv db.status`)."""
    url_is_set = raw_setting(DATABASE_URL, environ, dotenv_path)[0] is not None
    listed = []
    for setting in SETTINGS:
        text, source = raw_setting(setting, environ, dotenv_path)
        problem = None
        if text is not None:
            try:
                setting.parse(text)
            except SettingsError as error:
                problem = str(error)
        note = None
        if setting.name in CONNECTION_NAMES and setting is not DATABASE_URL and url_is_set:
            note = f"not used: {DATABASE_URL.name} is set"
        listed.append(EffectiveSetting(setting.name, shown(setting, text), source, problem, note))
    return tuple(listed)


def shown(setting: Setting[Any], text: str | None) -> str:
    """A setting's value as people may see it: the default described, a password masked, a
    URL without its password."""
    if text is None:
        if setting.secret and setting.default:
            return "***"
        return setting.shown_default().replace("`", "")  # the docs' Markdown, not the value's
    if not setting.secret:
        return text.strip()
    if setting.parser is not POSTGRES_URL:
        return "***" if text else "(empty)"
    try:
        return parse_database_url(text, setting.name).display_url()
    except SettingsError:
        return "(not a PostgreSQL URL)"


def check_migrations(
    database: DatabaseConfig | None = None, scripts: history.ScriptIndex | None = None
) -> MigrationStatus:
    """For the application's start-up: return quietly at head (or ahead of it by expand
    revisions only), raise with the reasons otherwise. `scripts`: the application's own copy of
    the migration scripts, when it is not this checkout's (a release check plays the previous
    release with `history.load().as_of(its revision)`)."""
    status = inspect(database or DatabaseConfig.from_env(), scripts)
    if status.problems:
        raise CheckFailed(status.summary())
    if status.pending:
        raise PendingMigrations(status.summary())
    return status
