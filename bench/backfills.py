"""A backfill: `uaip_db.ops.backfill` against one raw UPDATE, with a writer.

    python bench/backfills.py                  # 1,000,000 rows
    python bench/backfills.py --rows 200000

Both run on clones of one database (same rows, same machine, same run) while a writer thread
updates existing rows and inserts new ones one at a time; the longest any of its statements
took while the backfill ran is the writer's worst stall. run.py runs it as one of its steps.
The rows are in a table of the benchmark's own (TABLE, shaped like conversation_history),
made in the database at head: the benchmark does not depend on the schema's columns.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import psycopg  # noqa: E402

from uaip_db.migrations import history, runner  # noqa: E402
from uaip_db.migrations.backfill import DEFAULT_BATCH_ROWS  # noqa: E402
from uaip_db.servers.scratch import ScratchServer, start_scratch_server  # noqa: E402
from uaip_db.settings import DatabaseConfig  # noqa: E402

TABLE = "backfill_bench_messages"
FILL = f"""
CREATE TABLE {TABLE} (
    message_id bigserial PRIMARY KEY,
    stage_number integer NOT NULL,
    content text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{{}}',
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO {TABLE} (stage_number, content, metadata)
SELECT 1 + m % 5, 'Message ' || m || ': what data do you have? データ',
       jsonb_build_object('tokens', m)
FROM generate_series(1, %(rows)s) AS m;
ALTER TABLE {TABLE} ADD COLUMN content_length integer;
VACUUM ANALYZE;
"""
SET = {"content_length": "char_length(content)"}
WHERE = "content_length IS NULL"
RAW_UPDATE = f"UPDATE {TABLE} SET content_length = char_length(content)"
REVISION = '''"""Benchmark backfill"""
from alembic import op

from uaip_db.ops import backfill

revision = "bacf111ed001"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    backfill(op, "{table}", set={set!r}, where={where!r}, batch_rows={batch_rows})


def downgrade() -> None:
    op.execute("UPDATE {table} SET content_length = NULL")
'''


@dataclass(frozen=True)
class Measured:
    rows: int
    seconds: float
    worst_stall: float
    writer_statements: int

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


class Writer:
    """Updates a random existing message, then inserts one, over and over, each in autocommit;
    keeps the longest time one statement took."""

    def __init__(self, database: DatabaseConfig) -> None:
        self.conn = psycopg.connect(**database.connect_kwargs(), autocommit=True)
        self.ids = [
            row[0]
            for row in self.conn.execute(
                f"SELECT message_id FROM {TABLE} TABLESAMPLE SYSTEM (2) LIMIT 20000"
            ).fetchall()
        ]
        assert self.ids
        self.stop = threading.Event()
        self.worst = 0.0
        self.statements = 0

    def _timed(self, query: str, params: tuple[object, ...]) -> None:
        started = time.perf_counter()
        self.conn.execute(query, params)  # type: ignore[arg-type]
        self.worst = max(self.worst, time.perf_counter() - started)
        self.statements += 1

    def run(self) -> None:
        while not self.stop.is_set():
            self._timed(
                f"UPDATE {TABLE} SET metadata = metadata || '{{\"seen\": 1}}' "
                "WHERE message_id = %s",
                (random.choice(self.ids),),
            )
            self._timed(
                f"INSERT INTO {TABLE} (stage_number, content, content_length) VALUES (1, 'new', 3)",
                (),
            )
            time.sleep(0.005)

    @contextmanager
    def running(self) -> Iterator[None]:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        time.sleep(0.5)  # a steady state before the backfill starts
        self.worst = 0.0
        try:
            yield
        finally:
            self.stop.set()
            thread.join()
            self.conn.close()


def measure(database: DatabaseConfig, action: Callable[[], None]) -> Measured:
    rows = count_rows(database)
    writer = Writer(database)
    with writer.running():
        started = time.perf_counter()
        action()
        seconds = time.perf_counter() - started
    left = count_rows(database, "content_length IS NULL")
    if left:
        raise SystemExit(f"{left} rows were not backfilled")
    return Measured(rows, seconds, writer.worst, writer.statements)


def count_rows(database: DatabaseConfig, where: str = "true") -> int:
    with psycopg.connect(**database.connect_kwargs()) as conn:
        row = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE {where}").fetchone()  # type: ignore[arg-type]
    assert row is not None
    return int(row[0])


def raw_update(database: DatabaseConfig) -> None:
    with psycopg.connect(**database.connect_kwargs()) as conn:
        conn.execute(RAW_UPDATE)


def ops_backfill(database: DatabaseConfig, checkout: Path, report: Callable[[str], None]) -> None:
    os.environ["UAIP_DB_ROOT"] = str(checkout)
    try:
        runner.upgrade(database, "bacf111ed001", report=report)
    finally:
        del os.environ["UAIP_DB_ROOT"]


def write_checkout(folder: Path, batch_rows: int) -> Path:
    checkout = folder / "backfill-checkout"
    checkout.mkdir()
    shutil.copy(ROOT / "alembic.ini", checkout / "alembic.ini")
    shutil.copytree(ROOT / "migrations", checkout / "migrations")
    shutil.copytree(ROOT / "database", checkout / "database")
    head = history.load().single_head()
    (checkout / "migrations" / "versions" / "bacf111ed001_bench.py").write_text(
        REVISION.format(head=head, table=TABLE, set=SET, where=WHERE, batch_rows=batch_rows)
    )
    return checkout


def bench_backfill(
    server: ScratchServer, rows: int, folder: Path, batch_rows: int = DEFAULT_BATCH_ROWS
) -> list[tuple[str, Measured]]:
    """[("ops.backfill", ...), ("raw UPDATE", ...)] on clones of one filled database."""
    source = server.create_database("bench_backfill")
    runner.upgrade(source, "head")
    started = time.perf_counter()
    with psycopg.connect(**source.connect_kwargs(), autocommit=True) as conn:
        for statement in FILL.split(";"):
            if statement.strip():
                conn.execute(  # type: ignore[call-overload]
                    statement.replace("%(rows)s", str(rows))
                )
    print(f"  generated {rows} messages in {time.perf_counter() - started:.1f} s", flush=True)
    server.mark_template(source.name)
    checkout = write_checkout(folder, batch_rows)
    lines: list[str] = []
    results = []
    ours = server.create_database("bench_backfill_ops", template=source.name)
    results.append(
        ("ops.backfill", measure(ours, lambda: ops_backfill(ours, checkout, lines.append)))
    )
    print("\n".join(lines), flush=True)
    server.drop_database(ours.name)
    raw = server.create_database("bench_backfill_raw", template=source.name)
    results.append(("one raw UPDATE", measure(raw, lambda: raw_update(raw))))
    server.drop_database(raw.name)
    return results


def describe(results: list[tuple[str, Measured]]) -> str:
    lines = [
        f"| backfill of {TABLE} | rows | seconds | rows/s | writer's worst stall | "
        "writer statements |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, m in results:
        lines.append(
            f"| {name} | {m.rows} | {m.seconds:.2f} | {m.rate:,.0f} | "
            f"{m.worst_stall * 1000:.0f} ms | {m.writer_statements} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS)
    args = parser.parse_args()
    os.environ["UAIP_TEST_SERVER"] = "cluster"
    server = start_scratch_server()
    try:
        with tempfile.TemporaryDirectory(prefix="uaip-bench-") as scratch:
            results = bench_backfill(server, args.rows, Path(scratch), args.batch_rows)
    finally:
        server.close()
    print(describe(results))


if __name__ == "__main__":
    main()
