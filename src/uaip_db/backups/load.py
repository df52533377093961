"""An upgrade under load, measured: who waited behind which statement, and for how long.

While the writers of `backups.workload` run, a sampler on a connection of its own reads
pg_stat_activity and pg_locks every SAMPLE_SECONDS: every writer waiting for a lock, since when
(its statement's start), what relation it wants, and who blocks it (`pg_blocking_pids`). A wait
counts against the migration when the migration's backend is among its blockers (or blocks the
writer it queues behind). Each wait is charged to the migration statement that held a lock on
the wanted table at that moment (the strongest, from `migrations.lock_report`, which also says
how long each lock was held), else to the statement the migration was running (one still
waiting for its own lock). The budget (`max_writer_wait`) makes the result a verdict.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uaip_db.backups.workload import (
    APPLICATION_NAME,
    Latencies,
    LoadSettings,
    Workload,
    WorkloadResult,
)
from uaip_db.errors import BackupError
from uaip_db.migrations.lock_report import LockRecorder, StatementLocks, shorten
from uaip_db.pg import connect
from uaip_db.settings import MAX_WRITER_WAIT, DatabaseConfig

SAMPLE_SECONDS = 0.02  # a 200 ms stall is seen ten times over
# The shortest window writers are measured in once the upgrade starts (see Measurement).
SHORTEST_DURING_SECONDS = 1.0
WAITING_WRITERS = """
SELECT a.pid, a.query_start, extract(epoch FROM clock_timestamp() - a.query_start)::float8,
       pg_blocking_pids(a.pid),
       (SELECT c.relname FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation
        WHERE l.pid = a.pid AND NOT l.granted LIMIT 1)
FROM pg_stat_activity AS a
WHERE a.datname = current_database() AND a.application_name = %s AND a.wait_event_type = 'Lock'
"""
RUNNING = "SELECT query FROM pg_stat_activity WHERE pid = %s AND state = 'active'"
# Lock modes from weakest to strongest: which of a migration's locks a writer waits for.
MODES = (
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
)
NOT_APPLIED = "(not applied)"
STATEMENTS_SHOWN = 8


def max_writer_wait(environ: Mapping[str, str] | None = None) -> float:
    """UAIP_MAX_WRITER_WAIT: seconds a writer may wait behind the upgrade (default 1)."""
    budget: float = MAX_WRITER_WAIT.read(environ)
    return budget


@dataclass(frozen=True)
class Wait:
    """One writer statement seen waiting for a lock, at its longest."""

    writer: int  # backend pid
    seconds: float
    relation: str | None
    # The sample was read between these two moments (time.monotonic()): a busy machine can make
    # that a long while, so a wait is matched to the statements whose locks overlap it.
    seen_from: float
    seen_to: float
    behind_migration: bool
    migration_query: str | None  # what the migration ran at that moment

    def after(self, earlier: Wait | None) -> Wait:
        """This sample of a wait merged with an earlier one of the same statement: at its
        longest, and behind the migration (on its relation, during its query) if any sample saw
        that. A writer whose lock was just granted can still show as waiting, for longer, with
        no blocker left: that sample alone would file the whole wait as one behind others."""
        if earlier is None:
            return self
        longer, other = (self, earlier) if self.seconds > earlier.seconds else (earlier, self)
        return dataclasses.replace(
            longer,
            relation=longer.relation or other.relation,
            behind_migration=longer.behind_migration or other.behind_migration,
            migration_query=longer.migration_query or other.migration_query,
        )

    @property
    def began(self) -> float:
        """When the writer started waiting, on the clock seen_from is on."""
        return self.seen_from - self.seconds


@dataclass
class Sampler:
    """Samples waiting writers on its own connection in a thread, until `stop()`."""

    target: DatabaseConfig
    recorder: LockRecorder
    waits: dict[tuple[int, Any], Wait] = field(default_factory=dict)
    samples: int = 0
    worst_gap: float = 0.0
    _running: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    def start(self) -> None:
        self._running.set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._running.clear()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            with connect(self.target, application_name="uaip-db-sampler") as conn:
                previous = time.monotonic()
                while self._running.is_set():
                    self._sample(conn)
                    now = time.monotonic()
                    self.worst_gap = max(self.worst_gap, now - previous)
                    previous = now
                    time.sleep(max(0.0, SAMPLE_SECONDS - (time.monotonic() - now)))
        except BaseException as error:  # handed to the caller by stop()
            self._error = error

    def _sample(self, conn: Any) -> None:
        asked = time.monotonic()
        rows = conn.execute(WAITING_WRITERS, (APPLICATION_NAME,)).fetchall()
        answered = time.monotonic()
        self.samples += 1
        if not rows:
            return
        migration = self.recorder.backend_pid
        query = None
        if migration is not None:
            running = conn.execute(RUNNING, (migration,)).fetchone()
            query = running[0] if running else None
        direct = {pid for pid, _, _, blockers, _ in rows if migration in blockers}
        for pid, query_start, seconds, blockers, relation in rows:
            behind = pid in direct or bool(direct & set(blockers))
            key = (pid, query_start)
            wait = Wait(pid, seconds, relation, asked, answered, behind, query)
            self.waits[key] = wait.after(self.waits.get(key))


@dataclass(frozen=True)
class StatementLoad:
    """One migration statement under load: its locks, how long it held them, who waited."""

    revision: str
    statement: str
    locks: tuple[str, ...]
    held_seconds: float | None
    longest_wait: float  # the longest any writer waited behind it
    writers_waited: int  # writer statements seen waiting behind it

    def line(self) -> str:
        locks = ", ".join(self.locks) or "no table locks"
        held = f", held {self.held_seconds:.2f} s" if self.held_seconds is not None else ""
        waited = (
            f"; {self.writers_waited} writer statement(s) waited, the longest "
            f"{self.longest_wait:.2f} s"
            if self.writers_waited
            else "; no writer waited"
        )
        return f"{self.statement}: {locks}{held}{waited}"

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "statement": self.statement,
            "locks": list(self.locks),
            "held_seconds": self.held_seconds,
            "longest_writer_wait_seconds": self.longest_wait,
            "writers_waited": self.writers_waited,
        }


@dataclass(frozen=True)
class LoadReport:
    """What the writers went through while the upgrade ran, and the verdict of the budget."""

    settings: LoadSettings
    before: Latencies
    during: Latencies
    statements: tuple[StatementLoad, ...]
    longest_wait: float  # any writer behind the migration
    other_waits: float  # the longest wait behind something else (writers among themselves)
    errors: tuple[str, ...]  # one line per aborted client
    failed_transactions: int
    samples: int
    worst_gap: float

    def over_budget(self) -> list[StatementLoad]:
        """The statements writers waited behind for longer than the budget, worst first."""
        over = [s for s in self.statements if s.longest_wait > self.settings.max_writer_wait]
        return sorted(over, key=lambda s: -s.longest_wait)

    def problems(self) -> list[str]:
        found = [
            f"writers waited {s.longest_wait:.2f} s (budget {self.settings.max_writer_wait:g} s) "
            f"behind `{s.statement}` in {s.revision} ({', '.join(s.locks) or 'its lock request'}"
            + (f", held {s.held_seconds:.2f} s)" if s.held_seconds is not None else ")")
            for s in self.over_budget()
        ]
        if self.errors or self.failed_transactions:
            found.append(
                f"{self.error_count()} writer error(s) during the upgrade: "
                + "; ".join(self.errors[:2] or (f"{self.failed_transactions} failed",))
            )
        return found

    def error_count(self) -> int:
        return len(self.errors) + self.failed_transactions

    @property
    def passed(self) -> bool:
        return not self.problems()

    def summary(self) -> list[str]:
        lines = [
            f"under load: {self.settings.line()}",
            f"  pg_stat_activity and pg_locks sampled {self.samples} times, every "
            f"{SAMPLE_SECONDS * 1000:.0f} ms (the longest gap {self.worst_gap * 1000:.0f} ms)",
            f"  writers before the upgrade: {self.before.line()}",
            f"  writers during the upgrade: {self.during.line()}",
        ]
        for revision in dict.fromkeys(s.revision for s in self.statements):
            mine = [s for s in self.statements if s.revision == revision]
            shown = sorted(mine, key=lambda s: (-s.longest_wait, -(s.held_seconds or 0.0)))
            lines.append(f"  {revision}:")
            lines += [f"    {s.line()}" for s in shown[:STATEMENTS_SHOWN]]
            if len(mine) > STATEMENTS_SHOWN:
                lines.append(
                    f"    ... and {len(mine) - STATEMENTS_SHOWN} more statement(s), "
                    "no writer waited longer behind them"
                )
        lines.append(
            f"  longest writer wait behind the upgrade: {self.longest_wait:.2f} s "
            f"(budget {self.settings.max_writer_wait:g} s)"
            + (f"; behind other writers: {self.other_waits:.2f} s" if self.other_waits > 0 else "")
        )
        lines.append(
            f"  writer errors: {self.error_count()}" if self.error_count() else "  writer errors: 0"
        )
        lines += [f"    {error}" for error in self.errors[:3]]
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "clients": self.settings.clients,
            "rate": self.settings.rate,
            "max_writer_wait_seconds": self.settings.max_writer_wait,
            "before": self.before.to_json(),
            "during": self.during.to_json(),
            "longest_writer_wait_seconds": self.longest_wait,
            "other_waits_seconds": self.other_waits,
            "errors": list(self.errors),
            "failed_transactions": self.failed_transactions,
            "samples": self.samples,
            "worst_sample_gap_ms": round(self.worst_gap * 1000, 1),
            "statements": [s.to_json() for s in self.statements],
            "passed": self.passed,
            "problems": self.problems(),
        }


@dataclass
class Measurement:
    """Handed out by `under_load`: mark the upgrade's start and end, then read `result`."""

    settings: LoadSettings
    recorder: LockRecorder
    workload: Workload
    sampler: Sampler
    started: float = 0.0  # wall clock
    ended: float = 0.0
    result: LoadReport | None = None

    def upgrade_started(self) -> None:
        self.started = time.time()

    def upgrade_ended(self) -> None:
        self.ended = time.time()

    def during_until(self) -> float:
        """The end of the "during" window: the upgrade's end, and at least
        SHORTEST_DURING_SECONDS after its start."""
        return max(self.ended, self.started + SHORTEST_DURING_SECONDS)


@contextlib.contextmanager
def under_load(
    target: DatabaseConfig,
    recorder: LockRecorder,
    settings: LoadSettings,
    report: Callable[[str], None] | None = None,
) -> Iterator[Measurement]:
    """Writers on `target` and the sampler, for the `with` body (the upgrade); `result` is set
    when it ends without an exception. pgbench never outlives it."""
    with tempfile.TemporaryDirectory(prefix="uaip-load-") as folder:
        workload = Workload(target, Path(folder), settings)
        sampler = Sampler(target, recorder)
        measurement = Measurement(settings, recorder, workload, sampler)
        try:
            workload.start()
            sampler.start()
            if report:
                report(f"Writers started ({settings.line()}); measuring them first.")
            time.sleep(settings.before_seconds)
            if not workload.running():
                raise _stopped_early(workload.stop())
            yield measurement
            # A short upgrade is measured with the writers just after it, so "during" always
            # holds enough transactions to say something.
            time.sleep(max(0.0, measurement.during_until() - time.time()))
            sampler.stop()
            ran = workload.stop()
            measurement.result = analyse(measurement, ran)
        finally:
            with contextlib.suppress(Exception):
                sampler.stop()
            workload.kill()


def _stopped_early(ran: WorkloadResult) -> BackupError:
    why = next(iter(ran.aborted.values()), "pgbench ended")
    return BackupError(
        f"The writers stopped before the upgrade began: {why}. The application's workload "
        "(workload/) does not fit this database's schema even before the release, so the "
        "upgrade was not measured: bring workload/ up to date with the application."
    )


def application_breaks(aborted: dict[int, str]) -> tuple[str, ...]:
    """One sentence per failing statement of the application (however many writers hit it)."""
    return tuple(
        f"{why} on the upgraded copy: the running application would break at this statement; "
        "deploy the application that stops using it before this revision"
        for why in dict.fromkeys(aborted[client] for client in sorted(aborted))
    )


def analyse(measurement: Measurement, ran: WorkloadResult) -> LoadReport:
    """The samples and pgbench's log, read against the statements the recorder filed."""
    recorded = [
        (revision, statement)
        for revision, statements in measurement.recorder.by_revision.items()
        for statement in statements
    ]
    charged: dict[tuple[str, str], list[float]] = {}
    longest = other = 0.0
    for wait in measurement.sampler.waits.values():
        if not wait.behind_migration:
            other = max(other, wait.seconds)
            continue
        longest = max(longest, wait.seconds)
        charged.setdefault(culprit(wait, recorded), []).append(wait.seconds)
    loads: list[StatementLoad] = []
    for revision, statement in recorded:
        seconds = charged.pop((revision, statement.statement), [])
        loads.append(_statement_load(revision, statement, seconds))
    # Statements seen blocking that never completed (an attempt that timed out and was retried).
    for (revision, text), seconds in charged.items():
        loads.append(StatementLoad(revision, text, (), None, max(seconds), len(seconds)))
    start, end = measurement.started, measurement.during_until()
    before = [t for t in ran.transactions if t.ended <= start]
    during = [t for t in ran.transactions if t.ended > start and t.started < end]
    return LoadReport(
        measurement.settings,
        Latencies.of(before),
        Latencies.of(during),
        tuple(loads),
        longest,
        other,
        application_breaks(ran.aborted),
        ran.failed,
        measurement.sampler.samples,
        measurement.sampler.worst_gap,
    )


def _statement_load(revision: str, statement: StatementLocks, waits: list[float]) -> StatementLoad:
    return StatementLoad(
        revision,
        statement.statement,
        tuple(statement.locks),
        statement.held_seconds,
        max(waits, default=0.0),
        len(waits),
    )


def culprit(wait: Wait, recorded: list[tuple[str, StatementLocks]]) -> tuple[str, str]:
    """(revision, statement) a wait is charged to: the statement holding the strongest lock on
    the wanted table while the writer waited, else the one the migration was running.

    The whole wait counts, not only the moment it was seen: writers freed by a commit are still
    seen waiting, at their longest, in a sample taken just after it."""
    holding = [
        (revision, statement)
        for revision, statement in recorded
        if wait.relation in statement.tables()
        and statement.started <= wait.seen_to
        and wait.began <= (statement.released() or float("inf"))
    ]
    if holding:
        revision, statement = max(
            holding, key=lambda item: (_strength(item[1], wait.relation), -item[1].started)
        )
        return revision, statement.statement
    text = shorten(wait.migration_query) if wait.migration_query else "(statement not seen)"
    revision = next((r for r, s in recorded if s.statement == text), NOT_APPLIED)
    return revision, text


def _strength(statement: StatementLocks, relation: str | None) -> int:
    modes = [
        lock.partition(" on ")[0] for lock in statement.locks if lock.endswith(f" on {relation}")
    ]
    return max((MODES.index(m) for m in modes if m in MODES), default=-1)
