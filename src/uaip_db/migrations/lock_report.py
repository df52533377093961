"""Which relation locks each statement of a migration takes (for rehearsals and release reports).

Inside a transaction, locks are held until it ends, so after each statement the migration's own
connection reads what it holds now, and what is new since the previous statement is that
statement's. A statement outside a transaction (`CREATE INDEX CONCURRENTLY` in an autocommit
block) lets its locks go when it finishes, so while it runs a second connection samples
pg_locks for the migration's backend every few milliseconds, holding a snapshot older than the
statement until it has seen its locks: a concurrent index build waits for older snapshots, so
even one over in a millisecond is seen (the wait is at most HOLD_SNAPSHOT_SECONDS).

Each statement's locks are held from when it began until its transaction ends (commit or
rollback), or until it finishes when it runs outside one: `held_seconds`, on the
`time.monotonic()` clock that `started` is on too.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from uaip_db.pg import connect
from uaip_db.settings import DatabaseConfig

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.engine import Connection

SAMPLE_SECONDS = 0.002
# The longest a statement outside a transaction is kept waiting for the sampler's snapshot.
HOLD_SNAPSHOT_SECONDS = 1.0
STATEMENT_CHARS = 100
LOCKS_OF = """
SELECT DISTINCT l.mode || ' on ' || c.relname
FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation
WHERE l.pid = %s AND l.locktype = 'relation' AND l.granted
  AND c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
  AND c.relname NOT LIKE 'alembic\\_version%%' AND c.relname NOT LIKE 'uaip\\_db\\_%%'
"""


@dataclass(frozen=True)
class StatementLocks:
    statement: str  # the statement, shortened to one line
    locks: list[str]  # "AccessExclusiveLock on sessions", ...
    started: float = 0.0  # time.monotonic() when the statement began
    held_seconds: float | None = None  # until its transaction ended; None while it goes on

    def line(self) -> str:
        return f"{self.statement}: {', '.join(self.locks)}"

    def tables(self) -> set[str]:
        return {lock.partition(" on ")[2] for lock in self.locks}

    def released(self) -> float | None:
        """When its locks went (monotonic clock), if they have."""
        return None if self.held_seconds is None else self.started + self.held_seconds


@dataclass
class LockRecorder:
    """Collects the locks of each statement; `finish(revision)` files them under a revision."""

    database: DatabaseConfig
    by_revision: dict[str, list[StatementLocks]] = field(default_factory=dict)
    _pending: list[StatementLocks] = field(default_factory=list)
    _held: set[str] = field(default_factory=set)
    _sampled: set[str] = field(default_factory=set)
    _sampling: threading.Event = field(default_factory=threading.Event)
    _sampler: threading.Thread | None = None
    _watcher: psycopg.Connection[Any] | None = None
    # Statements whose transaction is still open: (the list holding it, its index there).
    _open: list[tuple[list[StatementLocks], int]] = field(default_factory=list)
    _started: float = 0.0
    backend_pid: int | None = None  # the migration's connection, once attached
    _holding_snapshot: bool = False

    def attach(self, conn: Connection) -> None:
        from sqlalchemy import event  # noqa: PLC0415

        if self._watcher is None:
            self._watcher = connect(self.database)
        # A retried attempt starts again: what the failed one ran was rolled back.
        self._pending = []
        self._open.clear()
        self._held.clear()
        driver = conn.connection.driver_connection
        self.backend_pid = driver.info.backend_pid if driver is not None else None
        event.listen(conn, "before_cursor_execute", self._before)
        event.listen(conn, "after_cursor_execute", self._after)
        event.listen(conn, "commit", self._transaction_ended)
        event.listen(conn, "rollback", self._transaction_ended)

    def finish(self, revision: str) -> None:
        """The statements since the last call belong to `revision` (its transaction ends next)."""
        # The list moves as it is: its statements' lock times are filled in when it commits.
        self.by_revision[revision] = self._pending
        self._pending = []
        self._held.clear()

    def close(self) -> None:
        self._stop_sampling()
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    def _before(self, conn: Any, _cursor: Any, _statement: str, *_: Any) -> None:
        driver = conn.connection.driver_connection
        self._stop_sampling()  # a statement that failed never reached _after
        self._started = time.monotonic()
        if driver.autocommit and self._watcher is not None:  # outside a transaction: sample
            self._sampled = set()
            self._sampling.set()
            # A snapshot older than the statement: a CREATE INDEX (or REINDEX) CONCURRENTLY
            # waits for it before it finishes, so its locks are seen even on a table so small
            # that it would be over between two samples. The sampler lets it go once seen.
            self._watcher.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            self._watcher.execute("SELECT 1")
            self._holding_snapshot = True
            self._sampler = threading.Thread(
                target=self._sample, args=(driver.info.backend_pid,), daemon=True
            )
            self._sampler.start()

    def _after(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        driver = conn.connection.driver_connection
        sampled = self._stop_sampling()
        now = {row[0] for row in driver.execute(LOCKS_OF, (driver.info.backend_pid,))}
        new = (now - self._held) | sampled
        self._held = now if not driver.autocommit else set()
        if new:
            started = self._started
            held = time.monotonic() - started if driver.autocommit else None
            self._pending.append(StatementLocks(shorten(statement), sorted(new), started, held))
            if held is None:
                self._open.append((self._pending, len(self._pending) - 1))

    def _transaction_ended(self, _conn: Any) -> None:
        now = time.monotonic()
        for statements, index in self._open:
            item = statements[index]
            statements[index] = dataclasses.replace(item, held_seconds=now - item.started)
        self._open.clear()

    def _stop_sampling(self) -> set[str]:
        if self._sampler is None:
            return set()
        self._sampling.clear()
        self._sampler.join()
        self._sampler = None
        self._release_snapshot()
        return self._sampled

    def _release_snapshot(self) -> None:
        if self._holding_snapshot and self._watcher is not None:
            self._holding_snapshot = False
            self._watcher.execute("COMMIT")

    def _sample(self, pid: int) -> None:
        watcher = self._watcher
        assert watcher is not None
        give_up = time.monotonic() + HOLD_SNAPSHOT_SECONDS
        try:
            while self._sampling.is_set():
                for row in watcher.execute(LOCKS_OF, (pid,)):
                    self._sampled.add(row[0])
                if self._sampled or time.monotonic() > give_up:
                    self._release_snapshot()
                time.sleep(SAMPLE_SECONDS)
        finally:
            self._release_snapshot()


def shorten(statement: str) -> str:
    text = " ".join(statement.split())
    return text if len(text) <= STATEMENT_CHARS else text[: STATEMENT_CHARS - 3] + "..."


def held_by(statements: list[StatementLocks]) -> list[str]:
    """Every lock a revision's statements took, once each."""
    return sorted({lock for item in statements for lock in item.locks})
