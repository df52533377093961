"""Upgrade, check, verify and show many databases in one run, with the single-database steps.

Every target is handled by the same library functions `inv db.*` uses: `operations` for an
upgrade (the plan and its refusals, the verified backup taken first in production or with
`--backup`, `runner.upgrade` with its own migration lock, timeouts, one transaction and one
ledger row per revision, the schema reached checked), `checks.status.inspect` and
`checks.verify.verify`.

Parallelism: read-only commands use a thread pool. Upgrades run in forked child processes, one
per target and at most `--parallel` at once: Alembic's `op` and `context` are process-wide
proxies, so two migrations may not run in threads of one process. The children are forked from
this process after the library is imported, so no target pays Python's start-up or Alembic's
import, and a child that dies fails its own target only (fleet/workers.py runs them; Ctrl-C
starts nothing new, and the report names each target rolled back or not started).

Waves: the first `canary` targets (in file order) are upgraded first; when any of them fails,
nothing else is touched and the rest are reported skipped. After that, a failing target does
not stop the others.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from uaip_db import paths
from uaip_db.catalog import expected
from uaip_db.checks.status import database_state, inspect
from uaip_db.checks.verify import verify as verify_one
from uaip_db.errors import SettingsError, UaipDbError, UsageError
from uaip_db.fleet import targets as targets_file
from uaip_db.fleet.identity import refuse_duplicates as refuse
from uaip_db.fleet.report import (
    AT_HEAD,
    DRIFTED,
    FAILED,
    FAILING,
    NOT_STARTED,
    PENDING,
    ROLLED_BACK,
    SKIPPED,
    UPGRADED,
    VERIFIED,
    FleetReport,
    TargetResult,
)
from uaip_db.fleet.targets import Shard, Target
from uaip_db.fleet.workers import OnResult, run_jobs
from uaip_db.migrations import applied, history, runner
from uaip_db.migrations.lock import DEFAULT_WAIT_SECONDS
from uaip_db.operations import (
    UpgradePlan,
    apply_upgrade,
    read_upgrade,
    refuse_to_start,
    verified_backup,
)
from uaip_db.pg import connection, first_line, scrub
from uaip_db.servers.scratch import scratch_server
from uaip_db.settings import DatabaseConfig

# How many of a drifted target's differences the report names.
FIRST_DIFFERENCES = 5


@dataclass(frozen=True)
class Fleet:
    """The targets of one run (after --shard), each with its connection, all checked."""

    targets: tuple[Target, ...]
    configs: tuple[DatabaseConfig, ...]
    shard: Shard | None
    path: Path | str = ""
    # The file's targets in other shards whose connection can be built here (their password
    # variable set): two targets reaching one database are refused across shards too.
    others: tuple[tuple[Target, DatabaseConfig], ...] = ()
    # Every target name of the file, in file order (the reports carry it for `fleet.report`).
    names: tuple[str, ...] = ()

    @property
    def shards(self) -> tuple[str, ...]:
        return (str(self.shard),) if self.shard else ()


def load_fleet(
    path: Path | str, shard: str | None = None, environ: Mapping[str, str] | None = None
) -> Fleet:
    """Read the targets file, take the shard's share, and build every target's connection
    (passwords from their variables): every mistake is found here, before any connection."""
    chosen = targets_file.parse_shard(shard) if shard else None
    loaded = targets_file.load(path)
    env = targets_file.environment_name(environ)
    selected = targets_file.select(loaded.targets, chosen)
    configs = tuple(target.config(environ, env) for target in selected)
    others = []
    for target in loaded.targets:
        if target not in selected:
            with contextlib.suppress(SettingsError):  # its password is for another machine
                others.append((target, target.config(environ, env)))
    return Fleet(tuple(selected), configs, chosen, path, tuple(others), tuple(loaded.names()))


def refuse_duplicates(fleet: Fleet, workers: int) -> None:
    """Exit 2 naming two targets that reach the same database, before anything is changed."""

    mine = list(zip(fleet.targets, fleet.configs, strict=True))
    refuse(mine + list(fleet.others), workers, fleet.path)


def parallel_setting(value: int | None) -> int:
    workers = value if value is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise UsageError(f"--parallel {value} is not a number of workers; use 1 or more.")
    return workers


# --- upgrade -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpgradeJob:
    """One target's upgrade, as handed to a worker process (pickled: no password in argv)."""

    name: str
    database: DatabaseConfig
    revision: str
    wanted: tuple[str, ...]
    lock_wait: float
    backup_dir: Path | None
    scratch_admin: DatabaseConfig | None


def upgrade(
    fleet: Fleet,
    *,
    revision: str = "head",
    parallel: int | None = None,
    canary: int = 0,
    backup: bool = False,
    backup_dir: Path | None = None,
    lock_wait: float = DEFAULT_WAIT_SECONDS,
    on_result: OnResult | None = None,
    on_start: Callable[[], None] | None = None,
) -> FleetReport:
    """Bring every target to `revision` (default head); see the module's docstring.
    `on_start` is called once the arguments and the targets are found sound."""
    started = time.perf_counter()
    workers = parallel_setting(parallel)
    if canary < 0:
        raise UsageError(f"--canary {canary} is not a number of targets; use 0 or more.")
    index = history.load()
    wanted = wanted_revisions(index, revision)
    if not fleet.targets:
        return empty_report("upgrade", revision, fleet)
    refuse_duplicates(fleet, workers)
    if on_start:
        on_start()
    production = any(config.is_production for config in fleet.configs)
    needs_backup = backup or production
    folder = backup_dir or paths.backup_dir()
    results: list[TargetResult] = []
    # Where each target was read to be, for the ones an interrupt leaves not started.
    read_at: dict[str, TargetResult] = {}

    def record(found: TargetResult) -> None:
        results.append(found)
        if on_result:
            on_result(found)

    with contextlib.ExitStack() as stack:
        scratch_admin: DatabaseConfig | None = None

        def wave(jobs: list[UpgradeJob]) -> None:
            """Read every target of the wave (threads, one query each), then upgrade the ones
            behind (forked workers): a fleet at head never imports Alembic."""
            nonlocal scratch_admin
            read = run_jobs(read_target, jobs, workers, processes=False, on_result=None)
            read_at.update((found.name, found) for found in read)
            for found in read:
                if found.status != PENDING:
                    record(found)
            behind = {found.name for found in read if found.status == PENDING}
            todo = [job for job in jobs if job.name in behind]
            if not todo:
                return
            if needs_backup and scratch_admin is None:
                # One throwaway server proves every target's backup restorable.
                scratch_admin = stack.enter_context(scratch_server()).admin
            todo = [replace(job, scratch_admin=scratch_admin) for job in todo]
            if workers > 1 and len(todo) > 1:
                import_migration_machinery()
            run_jobs(upgrade_target, todo, workers, processes=True, on_result=record)

        jobs = [
            UpgradeJob(
                target.name,
                config,
                revision,
                wanted,
                lock_wait,
                folder / target.name if needs_backup else None,
                None,
            )
            for target, config in zip(fleet.targets, fleet.configs, strict=True)
        ]
        canaries, rest = jobs[:canary], jobs[canary:]
        interrupted = False
        try:
            wave(canaries)
            if any(result.status in FAILING for result in results):
                for job in rest:
                    record(TargetResult(job.name, SKIPPED, error="a canary failed; not touched"))
            else:
                wave(rest)
        except KeyboardInterrupt:
            # Nothing new starts; the running upgrades have reported (rolled back, or done).
            interrupted = True
            done = {result.name for result in results}
            for job in jobs:
                if job.name not in done:
                    record(not_started(job, read_at.get(job.name)))
    return FleetReport(
        "upgrade",
        revision,
        in_file_order(fleet, results),
        time.perf_counter() - started,
        fleet.shards,
        interrupted=interrupted,
        fleet=fleet.names,
    )


def empty_report(command: str, revision: str, fleet: Fleet) -> FleetReport:
    """A shard that holds none of the file's targets: said, and nothing connected to."""
    return FleetReport(command, revision, (), 0.0, fleet.shards, fleet=fleet.names)


def not_started(job: UpgradeJob, read: TargetResult | None) -> TargetResult:
    """A target the interrupted run never began to upgrade: where it was read to be, if it was."""
    error = "not started: the run was interrupted; run the same command again"
    if read is None or read.status == FAILED:
        return TargetResult(job.name, NOT_STARTED, error=error, revision_known=False)
    return TargetResult(job.name, NOT_STARTED, read.from_revision, read.from_revision, error=error)


def import_migration_machinery() -> None:
    """Import Alembic and SQLAlchemy's PostgreSQL dialect once, here, so that the forked workers
    start with them instead of each importing them again."""
    import alembic.command  # noqa: PLC0415 (loaded before the workers fork, so each does not load it again)
    import alembic.ddl.postgresql  # noqa: PLC0415 (loaded before the workers fork, so each does not load it again)
    import alembic.operations  # noqa: PLC0415 (loaded before the workers fork, so each does not load it again)
    import alembic.runtime.migration  # noqa: PLC0415 (loaded before the workers fork, so each does not load it again)
    import sqlalchemy.dialects.postgresql.psycopg  # noqa: PLC0415 (loaded before the workers fork, so each does not load it again)
    import sqlalchemy.pool  # noqa: PLC0415 (loaded before the workers fork, so each does not load it again)
    from alembic.script import ScriptDirectory  # noqa: PLC0415 (loaded before the workers fork, so each does not load it again)

    # Loading the revision files imports what they import (uaip_db.ops, ...).
    ScriptDirectory.from_config(runner.alembic_config()).get_revisions("heads")
    del alembic, sqlalchemy


def wanted_revisions(index: history.ScriptIndex, revision: str) -> tuple[str, ...]:
    if not revision.strip():
        raise UsageError("--rev needs a revision: head (the default), an id or a prefix of one.")
    if revision == "heads":
        return tuple(index.heads)
    if revision == expected.BASE or revision.startswith("-"):
        raise UsageError("fleet.upgrade goes up only; it does not downgrade targets.")
    return (index.resolve(revision),)


def read_target(job: UpgradeJob) -> TargetResult:
    """Where a target is, with one query and no lock: at the wanted revision (left alone), in a
    state no upgrade may start from (failed), or behind (`pending`: to upgrade)."""
    started = time.perf_counter()
    seen: list[tuple[str, ...]] = []
    try:
        plan = current_state(job, seen)
        status = AT_HEAD if plan.nothing_to_do else PENDING
        return result(job, status, plan.current, plan.current, started)
    except Exception as error:  # one target's surprise must not end the others' run
        before = seen[0] if seen else ()
        return result(job, FAILED, before, before, started, problem(error), known=bool(seen))


def current_state(job: UpgradeJob, seen: list[tuple[str, ...]] | None = None) -> UpgradePlan:
    """The target's upgrade plan (its revisions also appended to `seen` once read), or a failure
    when no upgrade may start from there (operations.refuse_to_start)."""
    with connection(job.database) as conn:
        plan = read_upgrade(conn, job.database, job.revision)
    if seen is not None:
        seen.append(plan.current)
    refuse_to_start(plan, "fleet.upgrade")
    return plan


def upgrade_target(job: UpgradeJob) -> TargetResult:
    """One target behind: read it again (another runner may have moved it), then the one path
    of operations: a verified backup when asked, the upgrade under its own migration lock, the
    schema reached checked."""
    started = time.perf_counter()
    database = job.database
    seen: list[tuple[str, ...]] = []
    migrating: list[bool] = []
    try:
        plan = current_state(job, seen)
        if plan.nothing_to_do:
            return result(job, AT_HEAD, plan.current, plan.current, started)
        folder, scratch_admin = job.backup_dir, job.scratch_admin
        outcome = apply_upgrade(
            plan,
            backup_asked=folder is not None,
            take_backup=lambda target: verified_backup(
                target, folder or paths.backup_dir() / job.name, scratch_admin
            ),
            lock_wait=job.lock_wait,
            on_migrating=lambda: migrating.append(True),
            command="fleet.upgrade",
        )
        return result(job, UPGRADED, plan.current, outcome.current, started)
    except KeyboardInterrupt:
        # Ctrl-C: psycopg cancelled the statement, and the revision in progress was rolled back
        # with its transaction; the revisions before it stay applied.
        before = seen[0] if seen else ()
        now = now_at(database)
        after = now if now is not None else before
        stays = f"it stays at {label(now) or 'base'}" if now is not None else "see fleet.status"
        if not migrating:
            why = f"not started: the run was interrupted before its upgrade began; {stays}"
            return result(job, NOT_STARTED, before, after, started, why, now is not None)
        why = f"interrupted: the revision in progress was rolled back; {stays}"
        return result(job, ROLLED_BACK, before, after, started, why, now is not None)
    except Exception as error:  # one target's surprise must not end the others' run
        before = seen[0] if seen else ()
        now = now_at(database)
        known = now is not None
        return result(
            job, FAILED, before, now if now is not None else before, started, problem(error), known
        )


def now_at(database: DatabaseConfig) -> tuple[str, ...] | None:
    """Where a target is after a failure (each revision is its own transaction, so the ones
    before the failing revision stay applied); None when it cannot be read."""
    try:
        return applied.current_revisions(database)
    except UaipDbError:
        return None


def problem(error: Exception) -> str:
    """A failure in one line: ours as it is, anything else with its type."""
    if isinstance(error, UaipDbError):
        return str(error)
    return f"{type(error).__name__}: {first_line(str(error))}"


def result(
    job: UpgradeJob,
    status: str,
    before: tuple[str, ...],
    after: tuple[str, ...],
    started: float,
    error: str | None = None,
    known: bool = True,
) -> TargetResult:
    return TargetResult(
        job.name,
        status,
        label(before),
        label(after),
        time.perf_counter() - started,
        reportable(error, job.database),
        revision_known=known,
    )


def label(revisions: Sequence[str]) -> str | None:
    return ",".join(revisions) or None


def reportable(text: str | None, database: DatabaseConfig) -> str | None:
    """A message as the report may hold it: one line, never the target's password."""
    return None if text is None else " ".join(scrub(text, database).split())


# --- read-only commands ------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadJob:
    name: str
    database: DatabaseConfig


def status(
    fleet: Fleet, *, parallel: int | None = None, on_result: OnResult | None = None
) -> FleetReport:
    """Where each target is and what is pending (`db.status` per target)."""
    return read_all("status", fleet, status_target, parallel, on_result)


def check(
    fleet: Fleet, *, parallel: int | None = None, on_result: OnResult | None = None
) -> FleetReport:
    """`db.check` per target: pending revisions (exit 3), or something wrong (exit 1)."""
    return read_all("check", fleet, check_target, parallel, on_result)


def verify(
    fleet: Fleet, *, parallel: int | None = None, on_result: OnResult | None = None
) -> FleetReport:
    """`db.verify` per target: its schema against its revision's committed snapshot."""
    return read_all("verify", fleet, verify_target, parallel, on_result)


def read_all(
    command: str,
    fleet: Fleet,
    work: Callable[[ReadJob], TargetResult],
    parallel: int | None,
    on_result: OnResult | None,
) -> FleetReport:
    started = time.perf_counter()
    workers = parallel_setting(parallel)
    if not fleet.targets:
        return empty_report(command, "head", fleet)
    refuse_duplicates(fleet, workers)
    history.load()  # build the revision index once, before the threads read it
    jobs = [
        ReadJob(target.name, config)
        for target, config in zip(fleet.targets, fleet.configs, strict=True)
    ]
    results = run_jobs(guarded(work), jobs, workers, processes=False, on_result=on_result)
    return FleetReport(
        command,
        "head",
        in_file_order(fleet, results),
        time.perf_counter() - started,
        fleet.shards,
        fleet=fleet.names,
    )


def guarded(work: Callable[[ReadJob], TargetResult]) -> Callable[[ReadJob], TargetResult]:
    def run(job: ReadJob) -> TargetResult:
        started = time.perf_counter()
        try:
            found = work(job)
        except Exception as error:  # one target's surprise must not end the others' run
            found = TargetResult(job.name, FAILED, error=problem(error), revision_known=False)
        return replace(
            found,
            seconds=time.perf_counter() - started,
            error=reportable(found.error, job.database),
            details=tuple(reportable(line, job.database) or "" for line in found.details),
        )

    return run


def status_target(job: ReadJob) -> TargetResult:

    state = database_state(job.database)
    if not state.reachable:
        return TargetResult(job.name, FAILED, error=state.error, revision_known=False)
    at = label(state.current)
    if state.unknown:
        return TargetResult(job.name, FAILED, at, at, error=str(history.unknown_revision(at or "")))
    pending = tuple(f"pending {item['revision']} {item['doc']}" for item in state.pending)
    return TargetResult(job.name, PENDING if pending else AT_HEAD, at, at, details=pending)


def check_target(job: ReadJob) -> TargetResult:

    found = inspect(job.database)
    at = label(found.current)
    if found.problems:
        return TargetResult(
            job.name,
            FAILED,
            at,
            at,
            error=first_line(found.problems[0]),
            details=tuple(found.problems[1:]),
        )
    pending = tuple(f"pending {line}" for line in found.pending)
    return TargetResult(job.name, PENDING if pending else AT_HEAD, at, at, details=pending)


def verify_target(job: ReadJob) -> TargetResult:

    found = verify_one(job.database)
    at = None if found.revision == expected.BASE else found.revision
    if found.stale:
        return TargetResult(job.name, FAILED, at, at, error=found.stale)
    problems = found.differences + found.edited
    if problems:
        summary = (
            f"{len(found.differences)} difference(s) from revision {found.revision}'s committed "
            "snapshot" + (f", {len(found.edited)} edited revision file(s)" if found.edited else "")
        )
        return TargetResult(
            job.name, DRIFTED, at, at, error=summary, details=tuple(problems[:FIRST_DIFFERENCES])
        )
    return TargetResult(job.name, VERIFIED, at, at)


def in_file_order(fleet: Fleet, results: list[TargetResult]) -> tuple[TargetResult, ...]:
    position = {target.name: number for number, target in enumerate(fleet.targets)}
    return tuple(sorted(results, key=lambda found: position[found.name]))
