"""What every Invoke task shares: failures become one plain line and the right exit status."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from uaip_db.errors import USAGE, UaipDbError


def debugging() -> bool:
    """`inv --debug` (or INVOKE_DEBUG / UAIP_DEBUG) shows tracebacks instead of one line."""
    return bool(
        os.environ.get("INVOKE_DEBUG") or os.environ.get("UAIP_DEBUG")
    ) or logging.getLogger("invoke").isEnabledFor(logging.DEBUG)


@contextmanager
def reported() -> Iterator[None]:
    from invoke.exceptions import Exit

    try:
        yield
    except UaipDbError as error:
        if debugging():
            raise
        raise Exit(str(error) or None, code=error.exit_code) from None
    except BrokenPipeError:
        # The reader went away (`inv db.diff | head`): stop quietly, like other CLI tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise Exit(code=0) from None
    except KeyboardInterrupt:
        raise Exit("Interrupted; run the same task again to finish.", code=130) from None
    except Exception as error:
        if debugging() or not _is_database_error(error):
            raise
        from uaip_db.pg import explain
        from uaip_db.settings import DatabaseConfig

        raise Exit(str(explain(error, DatabaseConfig.from_env())), code=USAGE) from None


def _is_database_error(error: Exception) -> bool:
    return type(error).__module__.split(".")[0] in ("psycopg", "sqlalchemy")


def seconds(value: str, flag: str) -> float:
    """A duration flag in seconds (`--lock-wait 0.5`), or a usage error naming the flag."""
    from uaip_db.errors import SettingsError

    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if number < 0:
        raise SettingsError(f"{flag} {value!r} is not a number of seconds.")
    return number
