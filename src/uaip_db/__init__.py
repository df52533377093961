"""Schema lifecycle of the UAIP Scoping database.

For applications: `uaip_db.check_migrations()` at start-up returns quietly when the database is
at head and raises `PendingMigrations` or `CheckFailed` (with the reasons) otherwise;
`ConnectionProblem` when the database cannot be reached, or when another session's lock kept it
from being read within UAIP_READ_LOCK_WAIT (5 s by default; `DatabaseBusy`, naming that
session), and `SettingsError` for bad settings.
All are `UaipDbError`s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "1.1.0"
__all__ = [
    "CheckFailed",
    "ConnectionProblem",
    "PendingMigrations",
    "SettingsError",
    "UaipDbError",
    "check_migrations",
]
EXPORTED_ERRORS = (
    "CheckFailed",
    "ConnectionProblem",
    "PendingMigrations",
    "SettingsError",
    "UaipDbError",
)

if TYPE_CHECKING:
    from uaip_db.checks.status import check_migrations
    from uaip_db.errors import (
        CheckFailed,
        ConnectionProblem,
        PendingMigrations,
        SettingsError,
        UaipDbError,
    )


def __getattr__(name: str) -> Any:
    # Imported on first use, so `import uaip_db` stays cheap for tools that need only a part.
    if name == "check_migrations":
        from uaip_db.checks.status import check_migrations  # noqa: PLC0415

        return check_migrations
    if name in EXPORTED_ERRORS:
        from uaip_db import errors  # noqa: PLC0415

        return getattr(errors, name)
    raise AttributeError(name)
