"""A read-only check behind another session's ACCESS EXCLUSIVE lock ends within
pg.READ_LOCK_TIMEOUT_SECONDS with one line naming that session (exit 2), instead of waiting
without end (issue 24, item 22)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

import uaip_db
from tests.conftest import run_inv
from uaip_db.errors import USAGE, DatabaseBusy
from uaip_db.pg import READ_LOCK_TIMEOUT_SECONDS
from uaip_db.settings import DatabaseConfig

# Long enough for the lock timeout and the start of `inv`, far below "no end".
ENOUGH = READ_LOCK_TIMEOUT_SECONDS + 25
HOLDER = "the-holder"


@contextmanager
def locked(database: DatabaseConfig, table: str) -> Iterator[int]:
    """A second session holding ACCESS EXCLUSIVE on `table` in an open transaction: its pid."""
    kwargs = {**database.connect_kwargs(), "application_name": HOLDER}
    with psycopg.connect(**kwargs) as holder:
        holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield holder.info.backend_pid
        holder.rollback()


def says_who(text: str, holder: int, table: str) -> None:
    assert f"pid {holder} ({HOLDER} from " in text, text
    assert f"holds AccessExclusiveLock on public.{table}" in text, text
    assert "Traceback" not in text
    assert len(text.strip().splitlines()) == 1, text


@pytest.mark.parametrize("command", ["db.check", "db.verify"])
def test_a_check_behind_a_table_lock_names_the_holder(
    head_db: DatabaseConfig, command: str
) -> None:
    with locked(head_db, "sessions") as holder:
        started = time.monotonic()
        result = run_inv(command, database=head_db, timeout=ENOUGH)
        took = time.monotonic() - started
    assert result.returncode == USAGE, result.stdout + result.stderr
    says_who(result.stderr, holder, "sessions")
    assert took >= READ_LOCK_TIMEOUT_SECONDS


def test_check_migrations_behind_a_table_lock_raises_a_connection_problem(
    head_db: DatabaseConfig,
) -> None:
    with locked(head_db, "sessions") as holder, pytest.raises(uaip_db.ConnectionProblem) as raised:
        uaip_db.check_migrations(head_db)
    assert isinstance(raised.value, DatabaseBusy)
    says_who(str(raised.value), holder, "sessions")


def test_status_behind_a_lock_on_the_version_table_names_the_holder(
    head_db: DatabaseConfig,
) -> None:
    with locked(head_db, "alembic_version") as holder:
        result = run_inv("db.status", database=head_db, timeout=ENOUGH)
    assert result.returncode == USAGE, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("database:"))
    assert line.startswith("database: busy: "), line  # the server answered; a lock held it up
    says_who(line, holder, "alembic_version")
