"""The migration lock: one runner at a time, a bounded wait, and who holds it."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from uaip_db.migrations.lock import MigrationLockHeld, migration_lock
from uaip_db.settings import DatabaseConfig


def opener(database: DatabaseConfig):  # type: ignore[no-untyped-def]
    return lambda: psycopg.connect(**database.connect_kwargs())


def test_a_second_runner_gives_up_and_names_the_holder(empty_db: DatabaseConfig) -> None:
    with migration_lock(opener(empty_db)):
        started = time.monotonic()
        with (
            pytest.raises(MigrationLockHeld) as raised,
            migration_lock(opener(empty_db), wait_seconds=0.3),
        ):
            pass
        assert time.monotonic() - started >= 0.3
    message = str(raised.value)
    assert "Another migration holds the lock (pid " in message and "uaip-db" in message
    assert "--lock-wait" in message


def test_a_waiter_gets_the_lock_when_it_is_released(empty_db: DatabaseConfig) -> None:
    order: list[str] = []
    holding = threading.Event()

    def holder() -> None:
        with migration_lock(opener(empty_db)):
            holding.set()
            time.sleep(0.3)
            order.append("first done")

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait(5)
    waits: list[str] = []
    with migration_lock(opener(empty_db), wait_seconds=10, on_wait=waits.append):
        order.append("second in")
    thread.join()
    assert order == ["first done", "second in"]
    assert waits and waits[0].startswith("Waiting for the migration lock")


def test_the_holder_is_not_in_a_transaction(empty_db: DatabaseConfig) -> None:
    # A holder inside a transaction keeps a snapshot, and CREATE INDEX CONCURRENTLY waits for it.
    with migration_lock(opener(empty_db)), psycopg.connect(**empty_db.connect_kwargs()) as probe:
        states = probe.execute(
            "SELECT a.state, a.backend_xmin IS NULL FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory'"
        ).fetchall()
    assert states == [("idle", True)]
