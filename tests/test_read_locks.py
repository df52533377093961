"""A read-only check behind another session's ACCESS EXCLUSIVE lock ends within
UAIP_READ_LOCK_WAIT (5 s unless set; 1 s here) with one line naming that session (exit 2),
instead of waiting without end (issue 24, item 22)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

import uaip_db
from tests.conftest import run_inv
from uaip_db.errors import USAGE, DatabaseBusy
from uaip_db.settings import READ_LOCK_WAIT, DatabaseConfig

WAIT = {READ_LOCK_WAIT.name: "1"}
# Long enough for the lock timeout and the start of `inv`, far below "no end".
ENOUGH = 25
HOLDER = "the-holder"


@pytest.fixture(autouse=True)
def _short_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """check_migrations() in this process waits as long as the commands: 1 s."""
    monkeypatch.setenv(READ_LOCK_WAIT.name, "1")


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
        result = run_inv(command, database=head_db, env=WAIT, timeout=ENOUGH)
        took = time.monotonic() - started
    assert result.returncode == USAGE, result.stdout + result.stderr
    says_who(result.stderr, holder, "sessions")
    assert "was not granted within 1 s" in result.stderr and took >= 1


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
        result = run_inv("db.status", database=head_db, env=WAIT, timeout=ENOUGH)
    assert result.returncode == USAGE, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("database:"))
    says_who(line, holder, "alembic_version")
