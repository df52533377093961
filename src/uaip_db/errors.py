"""The errors the library raises: each carries a plain message and the exit status a CLI uses."""

from __future__ import annotations

USAGE = 2
CHECK_FAILED = 1
PENDING = 3


class UaipDbError(Exception):
    """A failure a person can act on: `str(error)` says what happened and what to do."""

    exit_code = USAGE


class SettingsError(UaipDbError):
    """A setting (environment, .env, argument) is missing or malformed."""


class ConnectionProblem(UaipDbError):
    """The database cannot be reached or refuses the connection."""


class ServerError(UaipDbError):
    """A local PostgreSQL server could not be found, started or stopped."""


class MigrationError(UaipDbError):
    """A migration failed or was refused; the database is left at a clean revision."""

    exit_code = CHECK_FAILED


class CheckFailed(UaipDbError):
    """A check found something wrong (drift, a failed verify, an unknown revision)."""

    exit_code = CHECK_FAILED


class BackupError(UaipDbError):
    """pg_dump or pg_restore failed; the message is its last meaningful line."""

    exit_code = CHECK_FAILED


class PendingMigrations(UaipDbError):
    """The database is behind the migration scripts."""

    exit_code = PENDING


class QuietExit(UaipDbError):
    """The step already printed its result (e.g. as JSON); only the exit status is left to give."""

    def __init__(self, exit_code: int) -> None:
        super().__init__("")
        self.exit_code = exit_code
