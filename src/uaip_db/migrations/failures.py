"""What went wrong in a migration, in one line: the revision, the statement, the cause
(read-only server, missing privilege, lock timeout, unknown revision) and where the database
stays; a revision that drops one of the project's bookkeeping tables."""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from uaip_db import paths
from uaip_db.catalog import expected, trust
from uaip_db.catalog.snapshot import diff, take_from
from uaip_db.errors import (
    MigrationError,
    PrivilegeMissing,
    ReadOnlyServer,
    SettingsError,
    StatementLockTimeout,
    UaipDbError,
)
from uaip_db.migrations import backfill_progress, history, ledger
from uaip_db.migrations.applied import current_revisions
from uaip_db.pg import STANDBY, connection, explain, read_only_reason
from uaip_db.settings import DatabaseConfig


def interrupted(error: BaseException) -> bool:
    """Whether `error` happened while cleaning up after Ctrl-C (SQLAlchemy then reports that it
    cannot reconnect, and the KeyboardInterrupt is only its context)."""
    return any(isinstance(seen, KeyboardInterrupt) for seen in causes(error))


def causes(error: BaseException) -> Iterator[BaseException]:
    """`error`, then what it happened while handling (its context, else its cause), and so on."""
    seen: BaseException | None = error
    while seen is not None:
        yield seen
        seen = seen.__context__ or seen.__cause__


def translate(error: BaseException, database: DatabaseConfig, direction: str) -> UaipDbError:
    import psycopg  # noqa: PLC0415
    from alembic.util import CommandError  # noqa: PLC0415
    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415

    if isinstance(error, CommandError):
        return command_error(error)
    error = _database_cause(error)
    cause = getattr(error, "orig", None) or error
    # Failures to connect come from libpq before the server runs anything: they have no SQLSTATE.
    if isinstance(cause, psycopg.OperationalError) and cause.sqlstate is None:
        return explain(cause, database)
    if not isinstance(error, DBAPIError | psycopg.Error):
        return _python_error(error, database, direction)
    problem = str(cause).strip().splitlines()[0]
    statement = getattr(error, "statement", None)
    here = ", ".join(current_revisions(database)) or "base"
    if isinstance(cause, psycopg.errors.ReadOnlySqlTransaction):
        reason = _read_only_reason(database)
        way_out = (
            "Run it against the primary (DB_HOST/DB_PORT or DATABASE_URL)."
            if reason == STANDBY
            else "Run it against a writable server, or turn default_transaction_read_only off "
            "for this database and role."
        )
        return ReadOnlyServer(
            f"Cannot change {database.where()}: the server {reason}, so nothing was changed "
            f"(it stays at revision {here}). {way_out}"
        )
    failing = _failing_revision(database, direction)
    where = f"Revision {failing}" if failing else "The migration"
    detail = f" in `{_shorten(statement)}`" if statement else ""
    if isinstance(cause, psycopg.errors.DuplicateTable) and here == "base":
        return MigrationError(
            f"{where} failed: {problem}. The database has tables but no recorded revision "
            "(built from init.sql?); record the revision it matches with "
            "`inv db.stamp --rev auto`, then run `inv db.upgrade`."
        )
    if isinstance(cause, psycopg.errors.InsufficientPrivilege):
        return PrivilegeMissing(
            f"{where} could not run{detail}: {problem}. The role {database.user} lacks a "
            f"privilege it needs; nothing was changed (revision {here}). Run migrations as the "
            "role that owns the schema (DB_USER), or grant the privilege to this one."
        )
    if isinstance(cause, psycopg.errors.LockNotAvailable):
        return StatementLockTimeout(
            f"{where} could not take a lock within lock_timeout{detail}: another transaction "
            f"holds it. The database stays at revision {here}."
        )
    left = committed_part(database, here)
    if left:
        return MigrationError(
            f"{where} failed{detail}: {problem}. The database stays at revision {here}, but its "
            f"schema is not {here}'s: {left} (part of the revision committed before it failed, "
            "or a change by hand). Undo that, or make the revision safe to run again, then run "
            "`inv db.upgrade` again."
        )
    return MigrationError(
        f"{where} failed{detail}: {problem}. The database stays at revision {here}; "
        "fix the migration, then run `inv db.upgrade` again."
    )


def committed_part(database: DatabaseConfig, here: str, shown: int = 3) -> str:
    """How the schema differs from `here`'s committed snapshot after a failed revision: what a
    revision that COMMITs half-way (or an autocommit block) left behind, or a change by hand
    made before. Empty when they match, or when either cannot be read."""

    if "," in here:
        return ""
    try:
        wanted = expected.snapshot(here)
        with connection(database) as conn:
            found = diff(wanted, take_from(conn))
    except Exception:  # only words the message: a failure to look changes nothing
        return ""
    more = f" and {len(found) - shown} more" if len(found) > shown else ""
    return "; ".join(found[:shown]) + more


def _python_error(error: BaseException, database: DatabaseConfig, direction: str) -> UaipDbError:
    """A Python error raised by a revision's code: the file and line it came from, what it was,
    and where the database stays (`--debug` shows the traceback, that frame included)."""
    line = revision_line(error)
    failing = _failing_revision(database, direction)
    where = f"Revision {failing}" if failing else "The migration"
    at = f" at {line}" if line else ""
    try:
        here = ", ".join(current_revisions(database)) or "base"
    except UaipDbError:
        here = "unknown"
    return MigrationError(
        f"{where} failed{at}: {type(error).__name__}: {error}. The database stays at revision "
        f"{here}; fix the revision, then run it again (--debug shows the traceback)."
    )


def revision_line(error: BaseException) -> str | None:
    """`versions/FILE.py, line N`: the innermost frame of `error` in a revision file."""
    versions = paths.versions_dir().resolve()
    found = None
    for frame in traceback.extract_tb(error.__traceback__):
        if Path(frame.filename).resolve().parent == versions:
            found = frame
    if found is None:
        return None
    return f"migrations/versions/{Path(found.filename).name}, line {found.lineno}"


def _read_only_reason(database: DatabaseConfig) -> str:
    """Why the server refused a write: a hot standby, or read-only transactions by default."""
    try:
        with connection(database) as conn:
            reason = read_only_reason(conn)
    except Exception:  # the answer only words the message: a failure to ask changes nothing
        reason = None
    return reason or "accepts no writes here (read-only transactions)"


def _database_cause(error: BaseException) -> BaseException:
    """The database error behind `error`: a failed step in an autocommit block (CONCURRENTLY)
    surfaces as SQLAlchemy's "This transaction is inactive", with the real error as context."""
    import psycopg  # noqa: PLC0415
    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415

    found = (seen for seen in causes(error) if isinstance(seen, DBAPIError | psycopg.Error))
    return next(found, error)


def _failing_revision(database: DatabaseConfig, direction: str) -> str | None:
    try:
        index = history.load()
        current = current_revisions(database)
        if direction == "upgrade":
            pending = index.pending(current)
            return index.describe(pending[0].revision) if pending else None
        return index.describe(current[0]) if current else None
    except UaipDbError:
        return None


def _shorten(statement: str, limit: int = 160) -> str:
    flat = " ".join(statement.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def command_error(error: Exception) -> UaipDbError:
    message = str(error)
    if "Can't locate revision" in message or "No such revision" in message:
        return SettingsError(f"{message}. `inv db.history` lists the known revisions.")
    if "Relative revision" in message or "didn't produce" in message:
        return SettingsError(
            f"{message}: there are not that many revisions that way. "
            "`inv db.current` shows where you are."
        )
    return MigrationError(message)


# What each bookkeeping table holds, for the refusal of a revision that drops one.
_HOLDS = {
    ledger.LEDGER_TABLE: "the table that records which revision files were applied",
    backfill_progress.PROGRESS_TABLE: "the table that records where each batched backfill is",
    trust.VERSION_TABLE: "the table that records the database's revision",
}


def refuse_dropped_bookkeeping(step: Any, known: dict[str, int], now: dict[str, int]) -> None:
    """Raise MigrationError (rolling the revision back) when a bookkeeping table in `known` is
    gone from `now`, or was dropped and made again (another oid)."""
    gone = sorted(name for name, oid in known.items() if now.get(name) != oid)
    if not gone:
        return
    table = gone[0].split(".", 1)[-1]
    holds = _HOLDS.get(table, "one of the tables uaip-db keeps its records in")
    others = f" (and {', '.join(gone[1:])})" if len(gone) > 1 else ""
    revision = step.up_revision_id
    action = "drops" if step.is_upgrade else "drops on downgrade"
    here = ", ".join(step.source_revision_ids) or "base"
    raise MigrationError(
        f"Revision {revision} {action} {table}{others}, {holds}; the project's tables are not a "
        f"revision's to drop. Nothing of it was applied (the database stays at revision {here}): "
        "remove that statement from the revision, then run the command again."
    )
