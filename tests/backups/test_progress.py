"""Progress lines while pg_dump and pg_restore run, on real dumps and restores."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import psycopg

from uaip_db import process
from uaip_db.backups import manifest as manifests
from uaip_db.backups import progress
from uaip_db.backups.dump import create_backup
from uaip_db.backups.restore import restore_backup
from uaip_db.servers.local import find_bindir
from uaip_db.settings import DatabaseConfig

DUMP_LINE = re.compile(r"^  pg_dump: (\d+\.\d) MB written, (\d+) s$")
RESTORE_LINE = re.compile(r"^  pg_restore: (\d+) of (\d+) tables loaded, (\d+) s$")


def test_a_backup_reports_bytes_written_while_pg_dump_runs(
    full_db: DatabaseConfig, backups: Path
) -> None:
    """pg_dump waits behind a lock the test holds until the first progress line arrives."""
    holder = psycopg.connect(**full_db.connect_kwargs())
    holder.execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
    released_by_report = threading.Event()
    fallback = threading.Timer(60, holder.rollback)
    lines: list[str] = []

    def report(line: str) -> None:
        lines.append(line)
        if DUMP_LINE.match(line) and not released_by_report.is_set():
            released_by_report.set()
            holder.rollback()

    fallback.start()
    try:
        made = create_backup(full_db, backups, report=report, progress_seconds=0.05)
    finally:
        fallback.cancel()
        holder.close()
    assert released_by_report.is_set()
    written = [float(m.group(1)) for m in map(DUMP_LINE.match, lines) if m]
    assert written and written == sorted(written)
    assert manifests.check_files(made.path).row_counts["sessions"] > 0


def test_a_restore_reports_the_tables_loaded(
    full_db: DatabaseConfig, new_target: DatabaseConfig, backups: Path
) -> None:
    made = create_backup(full_db, backups)
    lines: list[str] = []
    restored = restore_backup(made.path, new_target, report=lines.append, progress_seconds=0.001)
    assert restored.verified
    tables = len(made.manifest.row_counts)
    counts = [(int(m.group(1)), int(m.group(2))) for m in map(RESTORE_LINE.match, lines) if m]
    assert counts, lines
    assert {total for _, total in counts} == {tables}
    loaded = [done for done, _ in counts]
    assert loaded == sorted(loaded) and 0 <= loaded[-1] <= tables


def test_restored_tables_are_counted_from_pg_restores_own_lines(
    full_db: DatabaseConfig, backups: Path
) -> None:
    made = create_backup(full_db, backups)
    pg_restore = process.tool("pg_restore", find_bindir())
    dump = str(made.path / made.manifest.dump)
    result = process.execute([pg_restore, "--verbose", "--file=/dev/null", dump], check=True)
    counter = progress.RestoredTables(len(made.manifest.row_counts))
    for line in result.stderr.splitlines():
        counter.add(line)
    assert counter.loaded == len(made.manifest.row_counts)
    assert counter.describe(3).endswith(f"{counter.loaded} of {counter.total} tables loaded, 3 s")
