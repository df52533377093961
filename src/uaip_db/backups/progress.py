"""Progress of a long pg_dump or pg_restore: a line through `report` every few seconds.

The library never prints: a background thread calls `report` (the cli's, which prints) with
what the tool has done so far (bytes written, tables loaded) and the time elapsed, until the
tool ends.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

PROGRESS_SECONDS = 5.0
TABLE_DATA_STARTED = re.compile(r"processing data for table ")
TABLE_DATA_FINISHED = re.compile(r"finished item \d+ TABLE DATA ")


@contextlib.contextmanager
def reporting(
    report: Callable[[str], None] | None,
    describe: Callable[[float], str],
    interval: float = PROGRESS_SECONDS,
) -> Iterator[None]:
    """While the block runs, `report(describe(seconds elapsed))` every `interval` seconds."""
    if report is None:
        yield
        return
    stop = threading.Event()
    started = time.monotonic()

    def tick() -> None:
        while not stop.wait(interval):
            with contextlib.suppress(OSError):  # a file the tool is writing may come and go
                report(describe(time.monotonic() - started))

    thread = threading.Thread(target=tick, name="uaip-db progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def bytes_written(folder: Path) -> int:
    """The size of everything under `folder` so far (a dump being written)."""
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                total += path.stat().st_size
    return total


def dump_line(folder: Path) -> Callable[[float], str]:
    return lambda seconds: (
        f"  pg_dump: {bytes_written(folder) / 1e6:.1f} MB written, {seconds:.0f} s"
    )


class RestoredTables:
    """Tables whose rows pg_restore has loaded, counted from its --verbose lines."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.started = 0
        self.finished = 0
        self.loading = False
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        self.lines.append(line)
        if TABLE_DATA_FINISHED.search(line):  # parallel jobs say when a table is done
            self.finished += 1
        # One table at a time: its rows are loading until pg_restore says what it does next.
        self.loading = bool(TABLE_DATA_STARTED.search(line))
        self.started += self.loading

    @property
    def loaded(self) -> int:
        if self.finished:
            return self.finished
        return self.started - 1 if self.loading else self.started

    def describe(self, seconds: float) -> str:
        return f"  pg_restore: {self.loaded} of {self.total} tables loaded, {seconds:.0f} s"
