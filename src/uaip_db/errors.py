"""Every exception the library raises. Each says what happened and what to do; its category
decides the exit status a command ends with (no code matches the text of a message).

Exit statuses: 2 usage, settings or connection; 1 a check found something or a migration
failed; 3 pending migrations; 130 interrupted (the cli layer handles that one).
"""

from __future__ import annotations

USAGE = 2
CHECK_FAILED = 1
PENDING = 3
INTERRUPTED = 130


class UaipDbError(Exception):
    """A failure a person can act on: `str(error)` says what happened and what to do."""

    exit_code = USAGE


# --- exit 2: the request cannot be carried out as given ----------------------------------------


class SettingsError(UaipDbError):
    """A setting (environment, .env) is missing or malformed."""


class UsageError(UaipDbError):
    """An argument is malformed, or asks for something the database's state does not allow."""


class FileRefused(SettingsError):
    """A file named as settings (a targets file, a service file) is not a regular file of a
    bounded size: a device, a FIFO, a folder, or too large to be one. `reason` says which."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path} {reason}")
        self.reason = reason


class NotConfirmed(UaipDbError):
    """A destructive step was not confirmed: no --yes and no terminal to ask, or production
    without --confirm-db naming the database."""


class ConnectionProblem(UaipDbError):
    """The database cannot be reached or refuses the connection."""


class PasswordRefused(ConnectionProblem):
    """The server refused the password (or asked for one that was not given)."""


class DatabaseMissing(ConnectionProblem):
    """The server answers, but the named database does not exist."""


class DatabaseBusy(ConnectionProblem):
    """A read-only check waited UAIP_READ_LOCK_WAIT for a lock another session holds
    (ACCESS EXCLUSIVE on a table it reads); the message names that session. Nothing was found
    wrong with the schema, and nothing was changed: run it again when that session lets go."""


class UnusableDatabase(UaipDbError):
    """The database cannot hold the schema (an encoding without a character set)."""

    exit_code = CHECK_FAILED


class ReadOnlyServer(UaipDbError):
    """The server accepts no writes (a hot standby, or default_transaction_read_only): nothing
    was changed; the change belongs on the primary."""


class PrivilegeMissing(UaipDbError):
    """The role lacks a privilege the step needs (permission denied); nothing was changed."""


class ReportNotWritten(UaipDbError):
    """A report could not be written (a full disk): none of its files was left behind."""


class ServerError(UaipDbError):
    """A local PostgreSQL server could not be found, started or stopped."""


# --- exit 1: something was found wrong, or a change failed ---------------------------------------


class CheckFailed(UaipDbError):
    """A check found something wrong (drift, a failed verify, an unknown revision)."""

    exit_code = CHECK_FAILED


class UntrustedObject(CheckFailed):
    """Another role's object sits where the tool would run it as the connected role: an operator
    or function shadowing pg_catalog's, or a bookkeeping table (the migration ledger, the version
    table) that another role owns or that carries a trigger, a rule or a policy. Nothing was run
    or written; exit 1 because the database, not the request, is what needs fixing."""


class AnsweredNo(UaipDbError):
    """The person answered no (or ended the input) at a confirmation prompt."""

    exit_code = CHECK_FAILED


class RoundtripFailed(CheckFailed):
    """A revision's up, down, up did not give back the same schema or rows."""


class BackupError(UaipDbError):
    """pg_dump or pg_restore failed; the message is its last meaningful line."""

    exit_code = CHECK_FAILED


class DiskFull(BackupError):
    """A disk filled up under pg_dump, pg_restore or a server (SQLSTATE 53100, "No space left
    on device"): nothing was kept, and a backup's restore check proved nothing either way. The
    message names the disk (a folder, or a server); exit 1 like any failed backup."""


class MigrationError(UaipDbError):
    """A migration failed or was refused; the database is left at a clean revision."""

    exit_code = CHECK_FAILED


class StatementLockTimeout(MigrationError):
    """A migration statement waited longer than lock_timeout; it was rolled back."""


class MigrationLockHeld(UaipDbError):
    """Another runner kept the migration lock longer than we were willing to wait."""

    exit_code = CHECK_FAILED


# --- exit 3 ---------------------------------------------------------------------------------------


class PendingMigrations(UaipDbError):
    """The database is behind the migration scripts."""

    exit_code = PENDING
