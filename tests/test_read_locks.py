"""A read-only check behind another session's ACCESS EXCLUSIVE lock ends within
UAIP_READ_LOCK_WAIT with one line naming that session (exit 2), instead of waiting without end
(issue 24, item 22). The tests wait 1 s; one waits out the default."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

import uaip_db
from tests.conftest import run_inv
from uaip_db.errors import USAGE, DatabaseBusy
from uaip_db.servers.scratch import free_port
from uaip_db.settings import READ_LOCK_WAIT, DatabaseConfig

WAIT = {READ_LOCK_WAIT.name: "1s"}
# Long enough for the default lock wait and the start of `inv`, far below "no end".
ENOUGH = 30
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
        result = run_inv(command, database=head_db, env=WAIT, timeout=ENOUGH)
        took = time.monotonic() - started
    assert result.returncode == USAGE, result.stdout + result.stderr
    says_who(result.stderr, holder, "sessions")
    assert "within 1s (UAIP_READ_LOCK_WAIT)" in result.stderr
    assert took >= 1


def test_check_migrations_behind_a_table_lock_raises_a_connection_problem(
    head_db: DatabaseConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(READ_LOCK_WAIT.name, raising=False)
    with locked(head_db, "sessions") as holder, pytest.raises(uaip_db.ConnectionProblem) as raised:
        uaip_db.check_migrations(head_db)
    assert isinstance(raised.value, DatabaseBusy)
    says_who(str(raised.value), holder, "sessions")
    assert "within 5s (UAIP_READ_LOCK_WAIT)" in str(raised.value), "the default"


def test_status_behind_a_lock_on_the_version_table_names_the_holder(
    head_db: DatabaseConfig,
) -> None:
    with locked(head_db, "alembic_version") as holder:
        result = run_inv("db.status", database=head_db, env=WAIT, timeout=ENOUGH)
    assert result.returncode == USAGE, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("database:"))
    assert line.startswith("database: busy: "), line  # the server answered; a lock held it up
    says_who(line, holder, "alembic_version")


@pytest.mark.parametrize("value", ["soon", "25d", "-1s"])
@pytest.mark.parametrize(
    "args", [("db.check",), ("fleet.check", "--targets", "nowhere.toml"), ("db.rehearse",)]
)
def test_a_bad_read_lock_wait_is_refused_before_the_command_starts(
    value: str, args: tuple[str, ...], tmp_path: Path
) -> None:
    # Nothing is read or restored first: a database that does not exist, a targets file that
    # does not exist and an empty backup folder would each be named otherwise.
    nowhere = DatabaseConfig(host="127.0.0.1", port=free_port(), password="secret-xyz")
    env = {READ_LOCK_WAIT.name: value, "UAIP_BACKUP_DIR": str(tmp_path)}
    result = run_inv(*args, database=nowhere, env=env)
    assert result.returncode == USAGE, result.stdout + result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{READ_LOCK_WAIT.name}={value!r} is not"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
