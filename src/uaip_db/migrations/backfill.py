"""Batched, resumable backfills for revisions that change data in big tables.

`uaip_db.ops.backfill` is the entry point revision files import; this module does the work.

The contract (docs/MIGRATIONS.md, "Backfilling a big table"):
- It runs outside the revision's transaction (Alembic's autocommit block), so what the revision
  did before it (an ADD COLUMN) is committed first and its locks are gone while the rows change.
  The migration lock stays held on its own idle connection, so no other runner starts meanwhile.
- It walks the table in primary-key order (keyset pagination, never OFFSET), one short
  transaction per batch, each with its own lock_timeout and statement_timeout. A batch holds
  its rows' locks only until it commits, so a writer waits at most one batch behind it. `where`
  is checked again on the row's latest version when a writer changed it meanwhile (READ
  COMMITTED re-checks an UPDATE's own conditions), so a row done by the application is left be.
- Each batch's UPDATE and the last key it reached commit together, in one statement, into
  `uaip_db_backfill_progress`. After a kill the next run starts after that key: no row is
  skipped and none is updated twice. The runner deletes finished records in the revision's last
  transaction, with the version row, so a revision that fails after its backfill does not
  backfill again when retried (migrations/backfill_progress.py).
- Rows the application inserts while it runs with a key below the cursor are not visited: the
  application (or a DEFAULT) must write the new value itself; `where` (rows still to do) keeps
  a second run idempotent, and a NOT NULL validated afterwards (`set_not_null`) proves it.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql as psql

from uaip_db.errors import MigrationError
from uaip_db.migrations import runner
from uaip_db.migrations.backfill_progress import (
    ADD_DEFINITION,
    CREATE_PROGRESS_TABLE,
    PROGRESS_TABLE,
)
from uaip_db.settings import SESSION_SETTINGS

DEFAULT_BATCH_ROWS = 5_000
DEFAULT_BATCH_STATEMENT_TIMEOUT = "60s"
# A progress line at most this often (the first batch and the end are always reported).
REPORT_EVERY_SECONDS = 2.0
# The batches carry the last key as text from one transaction to the next: these settings make
# every key type's text read back as the same value (a float key under a database's
# extra_float_digits = -12 was rounded, and 300 of 1,000 rows were skipped).
# The session's own output settings (settings.SESSION_SETTINGS) again, inside each batch: a
# revision may SET them before its backfill, and the offline DO block gets no start-up options.
# Set in every batch's transaction: a trigger can tell the backfill's UPDATE from the
# application's (the dual-write trigger then keeps the row's other columns as they were).
BACKFILLING = "uaip_db.backfilling"
EXACT_KEY_TEXT = {
    **{name: value for name, value in SESSION_SETTINGS.items() if name != "search_path"},
    "bytea_output": "hex",
}
# And a batch updates the key range it picked through the primary key's index: the range's
# upper end is known only when the statement runs, and estimated at a third of the table the
# planner chose a sequential scan of all of it for every batch.
BATCH_SETTINGS = {**EXACT_KEY_TEXT, "enable_seqscan": "off", BACKFILLING: "on"}
# Plain `alembic` shows INFO from the `alembic` logger tree (alembic.ini); `inv` passes `report`.
LOGGER = logging.getLogger("alembic.uaip_db.backfill")


@dataclass(frozen=True)
class Progress:
    """Where a backfill is: rows done of the total, and how fast this run goes."""

    table: str
    rows_done: int
    total: int
    run_rows: int
    run_seconds: float

    @property
    def rate(self) -> float:
        return self.run_rows / self.run_seconds if self.run_seconds > 0 else 0.0

    @property
    def seconds_left(self) -> float | None:
        return (self.total - self.rows_done) / self.rate if self.rate > 0 else None

    def summary(self) -> str:
        share = f" ({100 * self.rows_done / self.total:.0f}%)" if self.total else ""
        left = self.seconds_left
        eta = f", about {_duration(left)} left" if left is not None and left > 0 else ""
        return (
            f"  backfill {self.table}: {self.rows_done} of {self.total} rows{share}, "
            f"{self.rate:,.0f} rows/s{eta}"
        )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def pause_for_rate(rows_done: int, elapsed: float, rows_per_second: float | None) -> float:
    """Seconds to wait before the next batch so that `rows_done` rows in `elapsed` seconds stay
    within `rows_per_second` (None or 0: no limit)."""
    if not rows_per_second:
        return 0.0
    return max(0.0, float(rows_done) / float(rows_per_second) - elapsed)


def retry_pause(attempt: int) -> float:
    """A jittered, growing pause after a batch's `attempt`-th lock timeout (as the runner's)."""
    base = min(runner.LONGEST_PAUSE_SECONDS, runner.FIRST_PAUSE_SECONDS * 2.0 ** (attempt - 1))
    return base * random.uniform(0.5, 1.5)


def definition(table: str, assignments: Mapping[str, str], where: str | None) -> str:
    """What a backfill does, as its progress record keeps it."""
    sets = ", ".join(f"{column} = ({expression})" for column, expression in assignments.items())
    return f"UPDATE {table} SET {sets} WHERE {where or 'true'}"


def default_name(table: str, assignments: Mapping[str, str], where: str | None) -> str:
    """The same backfill gets the same progress record on every run."""
    text = repr((table, sorted(assignments.items()), where))
    return f"{table}:{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def run(
    op: Any,
    table: str,
    assignments: Mapping[str, str],
    *,
    where: str | None,
    batch_rows: int | None,
    rows_per_second: float | None,
    name: str | None,
    lock_timeout: str | None,
    statement_timeout: str | None,
) -> None:
    batch_rows = DEFAULT_BATCH_ROWS if batch_rows is None else batch_rows
    statement_timeout = statement_timeout or DEFAULT_BATCH_STATEMENT_TIMEOUT
    if not assignments:
        raise MigrationError(f"backfill of {table} has nothing to set; pass set={{column: sql}}.")
    if batch_rows < 1:
        raise MigrationError(f"backfill of {table}: batch_rows must be 1 or more.")
    name = name or default_name(table, assignments, where)
    lock_timeout = lock_timeout or runner.timeouts()[0]
    context = op.get_context()
    with context.autocommit_block():
        if context.as_sql:
            op.execute(
                offline_sql(
                    table,
                    assignments,
                    where,
                    batch_rows,
                    rows_per_second,
                    name,
                    lock_timeout,
                    statement_timeout,
                )
            )
        else:
            conn = op.get_bind().connection.driver_connection
            batches = Batches(conn, table, assignments, where, batch_rows, name)
            batches.run(rows_per_second, lock_timeout, statement_timeout, _reporter(context))
    if context.as_sql:
        # Online, the runner forgets finished backfills when the version row moves.
        op.execute(f"DELETE FROM {PROGRESS_TABLE} WHERE name = {_literal(name)}")


def _reporter(context: Any) -> Callable[[str], None]:
    options = context.config.attributes.get("uaip_db") if context.config else None
    report = getattr(options, "report", None)
    return report if report is not None else LOGGER.info


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _array_item(text: str) -> str:
    """`text` as one element of a text[] literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# THE batch statement, built on the server from the table's primary key when the backfill
# starts, by the same query online (Batches) and offline (the DO block below). $1 table, $2
# where, $3 assignments, $4 batch rows, $5 the progress record's name, $6 the progress table.
# It returns the batch statement, the count of rows left, both taking the last key done as $1
# (text[], NULL at the start), and the key's columns; no row when the table has no primary key.
# A batch picks its rows in key order, then updates the key range they span (an index range
# scan: joining the picked keys back to the table hashed the whole table for every batch).
BATCH_STATEMENTS = """SELECT
    format('WITH batch AS (SELECT %1$s FROM %2$I WHERE %3$s AND (%4$s) ORDER BY %5$s LIMIT %6$s), '
           'last AS (SELECT ARRAY[%7$s] AS uaip_key, * FROM batch ORDER BY %8$s LIMIT 1), '
           'updated AS (UPDATE %2$I SET %9$s WHERE %3$s AND (%5$s) <= (%10$s) AND (%4$s) '
           'RETURNING 1), '
           'progress AS (UPDATE %11$I SET last_key = last.uaip_key, '
           'rows_done = rows_done + (SELECT count(*) FROM updated), updated_at = now() '
           'FROM last WHERE name = %12$L) '
           'SELECT (SELECT count(*) FROM updated), (SELECT uaip_key FROM last)',
           pk.picked, $1::text, pk.after, $2::text, pk.ordered, $4::int, pk.as_text,
           pk.descending, $3::text, pk.upper, $6::text, $5::text),
    format('SELECT count(*) FROM %1$I WHERE %2$s AND (%3$s)', $1::text, pk.after, $2::text),
    pk.columns
FROM (
    SELECT string_agg(format('%I AS uaip_key_%s', a.attname, k.n), ', ' ORDER BY k.n) AS picked,
           string_agg(quote_ident(a.attname), ', ' ORDER BY k.n) AS ordered,
           string_agg(format('uaip_key_%s DESC', k.n), ', ' ORDER BY k.n) AS descending,
           string_agg(format('uaip_key_%s::text', k.n), ', ' ORDER BY k.n) AS as_text,
           string_agg(format('(SELECT uaip_key_%s FROM last)', k.n), ', ' ORDER BY k.n) AS upper,
           format('($1::text[] IS NULL OR (%s) > (%s))',
                  string_agg(quote_ident(a.attname), ', ' ORDER BY k.n),
                  string_agg(format('CAST($1[%s] AS %s)', k.n,
                                    format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY k.n))
               AS after,
           array_agg(a.attname::text ORDER BY k.n) AS columns
      FROM pg_catalog.pg_index AS i
      CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
      JOIN pg_catalog.pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = pg_catalog.to_regclass(quote_ident($1::text)) AND i.indisprimary
    HAVING count(*) > 0
) AS pk"""


class Batches:
    """One backfill on the migration connection, in autocommit mode between batches."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        table: str,
        assignments: Mapping[str, str],
        where: str | None,
        batch_rows: int,
        name: str,
    ) -> None:
        self.conn = conn
        self.table = table
        self.assignments = assignments
        self.where = where
        self.batch_rows = batch_rows
        self.name = name
        row = (
            raw_cursor(conn)
            .execute(
                BATCH_STATEMENTS,
                (
                    table,
                    where or "true",
                    assignments_sql(assignments),
                    batch_rows,
                    name,
                    PROGRESS_TABLE,
                ),
            )
            .fetchone()
        )
        if row is None:
            raise MigrationError(
                f"backfill of {table}: no such table, or it has no primary key (the batches walk "
                "it in key order); add one first."
            )
        self.batch_statement, self.count_statement, key_columns = row
        assigned_keys = sorted(set(assignments) & set(key_columns))
        if assigned_keys:
            raise MigrationError(
                f"backfill of {table} sets its primary key ({', '.join(assigned_keys)}): the "
                "batches walk the table in key order, so rows would be visited again and again; "
                "change a key in a migration of its own."
            )
        self.definition = definition(table, assignments, where)

    def run(
        self,
        rows_per_second: float | None,
        lock_timeout: str,
        statement_timeout: str,
        report: Callable[[str], None],
    ) -> None:
        last_key, rows_done, finished = self._start()
        if finished:
            report(f"  backfill {self.table}: already done ({rows_done} rows), skipped")
            return
        total = rows_done + self._remaining(last_key)
        started = time.monotonic()
        reported = 0.0
        run_rows = 0
        budget = runner.lock_budget_setting()
        while True:
            time.sleep(pause_for_rate(run_rows, time.monotonic() - started, rows_per_second))
            done, last_key = self._batch_with_retries(
                last_key, lock_timeout, statement_timeout, budget, report
            )
            if last_key is None:
                break
            run_rows += done
            rows_done += done
            now = time.monotonic()
            if reported == 0.0 or now - reported >= REPORT_EVERY_SECONDS:
                reported = now
                report(self._progress(rows_done, total, run_rows, now - started).summary())
        self.conn.execute(
            f"UPDATE {PROGRESS_TABLE} SET finished_at = now() WHERE name = %s", (self.name,)
        )
        elapsed = time.monotonic() - started
        report(self._progress(rows_done, max(total, rows_done), run_rows, elapsed).summary())

    def _progress(self, rows_done: int, total: int, run_rows: int, seconds: float) -> Progress:
        return Progress(self.table, rows_done, total, run_rows, seconds)

    def _start(self) -> tuple[list[str] | None, int, bool]:
        self.conn.execute(CREATE_PROGRESS_TABLE)
        self.conn.execute(ADD_DEFINITION)
        self.refuse_another_unfinished()
        self.conn.execute(
            f"INSERT INTO {PROGRESS_TABLE} (name, table_name, definition) VALUES (%s, %s, %s) "
            "ON CONFLICT (name) DO NOTHING",
            (self.name, self.table, self.definition),
        )
        row = self.conn.execute(
            f"SELECT last_key, rows_done, finished_at IS NOT NULL FROM {PROGRESS_TABLE} "
            "WHERE name = %s",
            (self.name,),
        ).fetchone()
        assert row is not None
        return row[0], int(row[1]), bool(row[2])

    def refuse_another_unfinished(self) -> None:
        """A backfill of this table that stopped half-way doing something else (its set= or
        where= changed since, or this one's name did): going on would leave the rows before
        its cursor with the old values and the rest with the new, without a word."""
        row = self.conn.execute(
            f"SELECT name, coalesce(definition, 'a backfill recorded without its definition'), "
            f"rows_done FROM {PROGRESS_TABLE} WHERE table_name = %s AND finished_at IS NULL "
            "AND (name <> %s OR definition IS DISTINCT FROM %s) LIMIT 1",
            (self.table, self.name, self.definition),
        ).fetchone()
        if row is None:
            return
        name, was, done = row
        raise MigrationError(
            f"backfill of {self.table}: an unfinished backfill of this table ({name}, {done} rows "
            f"done) was doing something else: `{was}`. Run the revision that started it to the "
            f"end first, or, to start over on purpose, delete its record: DELETE FROM "
            f"{PROGRESS_TABLE} WHERE name = '{name}'."
        )

    def _remaining(self, last_key: list[str] | None) -> int:
        with self.conn.transaction():
            exact_key_text(self.conn)
            row = raw_cursor(self.conn).execute(self.count_statement, (last_key,)).fetchone()
        return int(row[0]) if row else 0

    def _batch(
        self, last_key: list[str] | None, lock_timeout: str, statement_timeout: str
    ) -> tuple[int, list[str] | None]:
        with self.conn.transaction():
            batch_settings(
                self.conn, lock_timeout=lock_timeout, statement_timeout=statement_timeout
            )
            # With a parameter the server takes one statement only: set= and where= are
            # expressions, and a `;` in one cannot start another statement.
            row = raw_cursor(self.conn).execute(self.batch_statement, (last_key,)).fetchone()
        assert row is not None
        return int(row[0]), row[1]

    def _batch_with_retries(
        self,
        last_key: list[str] | None,
        lock_timeout: str,
        statement_timeout: str,
        budget: float,
        report: Callable[[str], None],
    ) -> tuple[int, list[str] | None]:
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return self._batch(last_key, lock_timeout, statement_timeout)
            except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as error:
                attempt += 1
                pause = retry_pause(attempt)
                if time.monotonic() - started + pause > budget:
                    raise MigrationError(
                        f"backfill of {self.table}: a batch could not lock its rows within "
                        f"lock_timeout for {budget:g} s ({error.sqlstate}); it resumes where "
                        "it stopped: find the long transaction, then run the upgrade again."
                    ) from None
                report(
                    f"  backfill {self.table}: rows locked by another transaction; again in "
                    f"{pause:.1f} s"
                )
                time.sleep(pause)
            except psycopg.errors.QueryCanceled:
                raise MigrationError(
                    f"backfill of {self.table}: a batch of {self.batch_rows} rows ran longer than "
                    f"statement_timeout {statement_timeout}; it resumes where it stopped: "
                    "pass a smaller batch_rows, then run the upgrade again."
                ) from None


def raw_cursor(conn: psycopg.Connection[Any]) -> psycopg.RawCursor[Any]:
    """A cursor taking $1-style parameters: the statements are the same text online and in the
    offline DO block, and a `%` in a revision's expression stays as it is."""
    return psycopg.RawCursor(conn)


def exact_key_text(conn: psycopg.Connection[Any]) -> None:
    """Inside a transaction: keys written as text read back as the same values."""
    set_locally(conn, EXACT_KEY_TEXT)


def batch_settings(conn: psycopg.Connection[Any], **timeouts: str) -> None:
    """Inside a batch's transaction: its timeouts and BATCH_SETTINGS, in one round trip."""
    set_locally(conn, {**timeouts, **BATCH_SETTINGS})


def set_locally(conn: psycopg.Connection[Any], settings: Mapping[str, str]) -> None:
    calls = ", ".join("set_config(%s, %s, true)" for _ in settings)
    conn.execute(f"SELECT {calls}", [text for item in settings.items() for text in item])


def assignments_sql(assignments: Mapping[str, str]) -> str:
    """`column = (expression), ...` with each column quoted as an identifier."""
    return ", ".join(
        f"{psql.Identifier(column).as_string(None)} = ({expression})"
        for column, expression in assignments.items()
    )


# Offline, the same statements in a loop that commits after every batch: @NAME@-style markers
# are filled by offline_sql().
OFFLINE_LOOP = """DO $uaip_backfill$
DECLARE
    batch_statement text; count_statement text; key_columns text[];
    cursor_key text[]; done bigint; finished boolean;
BEGIN
    EXECUTE @BATCH_STATEMENTS@ INTO batch_statement, count_statement, key_columns
      USING @TABLE@, @WHERE@, @ASSIGNMENTS@, @BATCH_ROWS@, @NAME@, @PROGRESS_NAME@;
    IF batch_statement IS NULL THEN
        RAISE EXCEPTION 'backfill of %: no such table, or it has no primary key', @TABLE@;
    END IF;
    IF key_columns && @ASSIGNED@::text[] THEN
        RAISE EXCEPTION 'backfill of %: it sets its primary key', @TABLE@;
    END IF;
    SELECT p.last_key, p.finished_at IS NOT NULL INTO cursor_key, finished
      FROM @PROGRESS@ AS p WHERE p.name = @NAME@;
    IF finished THEN
        RAISE NOTICE 'backfill of %: already done', @TABLE@;
        RETURN;
    END IF;
    LOOP
        PERFORM set_config('lock_timeout', @LOCK_TIMEOUT@, true);
        PERFORM set_config('statement_timeout', @STATEMENT_TIMEOUT@, true);
@BATCH_SETTINGS@
        EXECUTE batch_statement INTO done, cursor_key USING cursor_key;
        EXIT WHEN cursor_key IS NULL;
        RAISE NOTICE 'backfill of %: % more rows', @TABLE@, done;
        COMMIT;
        PERFORM pg_sleep(@PAUSE@);
    END LOOP;
    UPDATE @PROGRESS@ SET finished_at = now() WHERE name = @NAME@;
END
$uaip_backfill$"""


def offline_sql(
    table: str,
    assignments: Mapping[str, str],
    where: str | None,
    batch_rows: int,
    rows_per_second: float | None,
    name: str,
    lock_timeout: str,
    statement_timeout: str,
) -> str:
    """The same backfill as plain SQL: a DO block that commits after every batch.

    It finds the primary key when it runs, keeps the same progress record (so it resumes a
    run that `inv db.upgrade` or an earlier psql started), and must run outside a transaction
    block (psql's default; not `psql -1`), like CREATE INDEX CONCURRENTLY.
    """
    assignments_text = assignments_sql(assignments)
    pause = f"{batch_rows / rows_per_second:.3f}" if rows_per_second else "0"
    values = {
        "@TABLE@": _literal(table),
        "@PROGRESS@": PROGRESS_TABLE,
        "@NAME@": _literal(name),
        "@LOCK_TIMEOUT@": _literal(lock_timeout),
        "@STATEMENT_TIMEOUT@": _literal(statement_timeout),
        "@WHERE@": _literal(where or "true"),
        "@BATCH_ROWS@": str(int(batch_rows)),
        "@ASSIGNMENTS@": _literal(assignments_text),
        "@BATCH_STATEMENTS@": "$uaip_batch$" + BATCH_STATEMENTS + "$uaip_batch$",
        "@PROGRESS_NAME@": _literal(PROGRESS_TABLE),
        "@ASSIGNED@": _literal("{" + ",".join(_array_item(c) for c in assignments) + "}"),
        "@PAUSE@": pause,
        "@BATCH_SETTINGS@": "\n".join(
            f"        PERFORM set_config({_literal(setting)}, {_literal(value)}, true);"
            for setting, value in BATCH_SETTINGS.items()
        ),
    }
    loop = OFFLINE_LOOP
    for marker, value in values.items():
        loop = loop.replace(marker, value)
    header = [
        f"-- uaip_db.ops.backfill: UPDATE {table} SET {assignments_text}",
        f"--   WHERE {where or 'true'}: in primary-key order, {batch_rows} rows per transaction",
        f"--   (lock_timeout {lock_timeout}, statement_timeout {statement_timeout}), resumable:",
        f"--   the last key done is kept in {PROGRESS_TABLE} under {_literal(name)}.",
        "--   Run it outside a transaction block (not with psql -1). The progress row is deleted",
        "--   after it: a re-run of this script after a later failure backfills again (rows the",
        "--   WHERE excludes stay as they are).",
    ]
    if rows_per_second:
        header.append(f"--   At most {rows_per_second:g} rows/s: a pause after each batch.")
    return "\n".join(
        [
            *header,
            CREATE_PROGRESS_TABLE + ";",
            ADD_DEFINITION + ";",
            f"INSERT INTO {PROGRESS_TABLE} (name, table_name, definition) VALUES "
            f"({_literal(name)}, {_literal(table)}, "
            f"{_literal(definition(table, assignments, where))}) ON CONFLICT (name) DO NOTHING;",
            loop,
        ]
    )
