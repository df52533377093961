"""Running a fleet's jobs: a thread pool (read-only work) or one forked child per job (upgrades),
at most `workers` at once, each result handed on as it finishes.

Ctrl-C (SIGINT, to the whole process group from a terminal, or to this process alone): nothing
new starts. Every running child gets the interrupt once (forwarded when it did not come with the
group), rolls back its revision in progress and reports where its target stays; a child that
has not reported within `STOP_SECONDS` (or when Ctrl-C comes again) is killed and its target
reported failed. Then KeyboardInterrupt goes on to the caller, which names the jobs never started.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_any
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Protocol, TypeVar

from uaip_db.fleet.report import FAILED, INTERRUPTED_STATUSES, TargetResult

OnResult = Callable[[TargetResult], None]
# How long the running children have, after an interrupt, to roll back and report.
STOP_SECONDS = 10.0


class Named(Protocol):
    @property
    def name(self) -> str: ...


Job = TypeVar("Job", bound=Named)


def run_jobs(
    work: Callable[[Job], TargetResult],
    jobs: Sequence[Job],
    workers: int,
    *,
    processes: bool,
    on_result: OnResult | None,
) -> list[TargetResult]:
    """Run `work` over `jobs`, at most `workers` at a time; results as they finish.
    KeyboardInterrupt after an interrupt, once the running jobs have reported (see above)."""
    results: list[TargetResult] = []
    if not jobs:
        return results

    def finished(found: TargetResult) -> None:
        results.append(found)
        if on_result:
            on_result(found)

    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            found = work(job)
            finished(found)
            if found.status in INTERRUPTED_STATUSES:  # its work caught an interrupt: stop
                raise KeyboardInterrupt
    elif processes:
        run_forked(work, jobs, workers, finished)
    else:
        run_threads(work, jobs, workers, finished)
    return results


def run_threads(
    work: Callable[[Job], TargetResult], jobs: Sequence[Job], workers: int, finished: OnResult
) -> None:
    executor = ThreadPoolExecutor(max_workers=min(workers, len(jobs)), thread_name_prefix="fleet")
    futures: list[Future[TargetResult]] = []
    try:
        futures = [executor.submit(work, job) for job in jobs]
        for future in as_completed(futures):
            finished(future.result())
    except KeyboardInterrupt:
        # The jobs not begun never start; the running ones (one query each) end on their own.
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        executor.shutdown(wait=True)


def run_forked(
    work: Callable[[Job], TargetResult],
    jobs: Sequence[Job],
    workers: int,
    finished: OnResult,
) -> None:
    """One forked child per job, at most `workers` alive at once, each sending its result back
    through a pipe of its own. A child that dies (killed, out of memory) fails its own target
    only: the next job gets a new child. Forked, not spawned: the children start with the
    library already imported."""
    context = multiprocessing.get_context("fork")
    waiting = list(jobs)
    running: dict[Connection, tuple[Job, BaseProcess]] = {}
    stopping = False
    try:
        try:
            while running or (waiting and not stopping):
                while waiting and not stopping and len(running) < workers:
                    job = waiting.pop(0)
                    receiver, sender = context.Pipe(duplex=False)
                    child = context.Process(target=_send_result, args=(work, job, sender))
                    # SIGINT waits until the child has its own handler (see _send_result).
                    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
                    try:
                        child.start()
                    finally:
                        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
                    sender.close()
                    running[receiver] = (job, child)
                for ready in wait_for_any(list(running)):
                    found = _collect(ready, running, stopping)
                    finished(found)
                    if found.status in INTERRUPTED_STATUSES and not stopping:
                        stopping = True  # a child was interrupted on its own: stop there too
                        _interrupt(running)
        except KeyboardInterrupt:
            stopping = True
            _interrupt(running)
            deadline = time.monotonic() + STOP_SECONDS
            while running and (left := deadline - time.monotonic()) > 0:
                for ready in wait_for_any(list(running), timeout=left):
                    finished(_collect(ready, running, stopping))
    finally:
        # Still running: the deadline passed, Ctrl-C came again, or something went wrong here.
        for receiver, (job, worker) in list(running.items()):
            worker.kill()
            worker.join()
            receiver.close()
            finished(
                TargetResult(
                    job.name,
                    FAILED,
                    error="interrupted, and its worker did not stop in time, so it was killed; "
                    "the server rolls back its revision in progress: see `inv fleet.status`",
                    revision_known=False,
                )
            )
        running.clear()
    if stopping:
        raise KeyboardInterrupt


def _collect(
    ready: object, running: dict[Connection, tuple[Job, BaseProcess]], stopping: bool
) -> TargetResult:
    assert isinstance(ready, Connection)
    job, child = running.pop(ready)
    try:
        found: TargetResult = ready.recv()
    except EOFError:
        why = (
            "interrupted before its worker could report; see `inv fleet.status`"
            if stopping
            else "its worker process died (killed, or out of memory); run again"
        )
        found = TargetResult(job.name, FAILED, error=why, revision_known=False)
    ready.close()
    child.join()
    return found


def _interrupt(running: dict[Connection, tuple[Job, BaseProcess]]) -> None:
    """Hand the interrupt to each running child (one already interrupted ignores it)."""
    for _job, child in running.values():
        if child.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGINT)


def _interrupted_once(signum: int, frame: FrameType | None) -> None:
    """A child's SIGINT handler: the first interrupt stops its work (KeyboardInterrupt); later
    ones (the group's Ctrl-C and the parent's forwarded one) are ignored while it reports."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _send_result(work: Callable[[Job], TargetResult], job: Job, sender: Connection) -> None:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted_once)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        found = work(job)
    except KeyboardInterrupt:
        return  # outside what `work` handles: the parent reports it interrupted
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the result is on its way: let it arrive
    sender.send(found)
    sender.close()
