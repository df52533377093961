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
from typing import TYPE_CHECKING, Any

from uaip_db.errors import MigrationError
from uaip_db.migrations import runner
from uaip_db.migrations.backfill_progress import (
    ADD_DEFINITION,
    CREATE_PROGRESS_TABLE,
    PROGRESS_TABLE,
)
from uaip_db.settings import SESSION_SETTINGS

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql as psql

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
        self.keys = primary_key(conn, table)
        assigned_keys = sorted(set(assignments) & {column for column, _ in self.keys})
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
        from psycopg import sql as psql

        query = psql.SQL("SELECT count(*) FROM {} WHERE {} AND ({}) AND %s").format(
            psql.Identifier(self.table), self._after(last_key), _expression(self.where or "true")
        )
        with self.conn.transaction():
            exact_key_text(self.conn)
            row = self.conn.execute(query, (True,)).fetchone()
        return int(row[0]) if row else 0

    def _after(self, last_key: list[str] | None) -> psql.Composable:
        from psycopg import sql as psql

        if last_key is None:
            return psql.SQL("true")
        columns = psql.SQL(", ").join(psql.Identifier(column) for column, _ in self.keys)
        values = psql.SQL(", ").join(
            psql.SQL("CAST({} AS {})").format(psql.Literal(value), psql.SQL(type_name))
            for value, (_, type_name) in zip(last_key, self.keys, strict=True)
        )
        return psql.SQL("({}) > ({})").format(columns, values)

    def batch_query(self, last_key: list[str] | None) -> psql.Composed:
        from psycopg import sql as psql

        table = psql.Identifier(self.table)
        aliases = [psql.Identifier(f"uaip_key_{n}") for n in range(1, len(self.keys) + 1)]
        columns = [psql.Identifier(column) for column, _ in self.keys]
        return psql.SQL(
            "WITH batch AS ("
            "SELECT {picked} FROM {table} WHERE {after} AND ({where}) "
            "ORDER BY {order} LIMIT {limit}), "
            "updated AS (UPDATE {table} SET {assignments} FROM batch "
            "WHERE ({target}) = ({aliases}) AND ({where}) RETURNING 1), "
            "last AS (SELECT ARRAY[{as_text}] AS key FROM batch ORDER BY {descending} LIMIT 1), "
            "progress AS (UPDATE {progress} SET last_key = last.key, "
            "rows_done = rows_done + (SELECT count(*) FROM updated), updated_at = now() "
            "FROM last WHERE name = %s RETURNING 1) "
            "SELECT (SELECT count(*) FROM updated), (SELECT key FROM last), "
            "(SELECT count(*) FROM progress)"
        ).format(
            picked=psql.SQL(", ").join(
                psql.SQL("{} AS {}").format(c, a) for c, a in zip(columns, aliases, strict=True)
            ),
            table=table,
            after=self._after(last_key),
            where=_expression(self.where or "true"),
            order=psql.SQL(", ").join(columns),
            limit=psql.Literal(self.batch_rows),
            assignments=psql.SQL(", ").join(
                psql.SQL("{} = ({})").format(psql.Identifier(column), _expression(expression))
                for column, expression in self.assignments.items()
            ),
            target=psql.SQL(", ").join(psql.SQL("{}.{}").format(table, c) for c in columns),
            aliases=psql.SQL(", ").join(aliases),
            as_text=psql.SQL(", ").join(psql.SQL("{}::text").format(a) for a in aliases),
            descending=psql.SQL(", ").join(psql.SQL("{} DESC").format(a) for a in aliases),
            progress=psql.Identifier(PROGRESS_TABLE),
        )

    def _batch(
        self, last_key: list[str] | None, lock_timeout: str, statement_timeout: str
    ) -> tuple[int, list[str] | None]:
        with self.conn.transaction():
            self.conn.execute("SELECT set_config('lock_timeout', %s, true)", (lock_timeout,))
            self.conn.execute(
                "SELECT set_config('statement_timeout', %s, true)", (statement_timeout,)
            )
            exact_key_text(self.conn)
            self.conn.execute("SELECT set_config(%s, 'on', true)", (BACKFILLING,))
            # With a parameter the server takes one statement only: set= and where= are
            # expressions, and a `;` in one cannot start another statement.
            row = self.conn.execute(self.batch_query(last_key), (self.name,)).fetchone()
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
        import psycopg

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


def exact_key_text(conn: psycopg.Connection[Any]) -> None:
    """Inside a transaction: keys written as text read back as the same values."""
    for setting, value in EXACT_KEY_TEXT.items():
        conn.execute("SELECT set_config(%s, %s, true)", (setting, value))


def _expression(text: str) -> psql.Composable:
    """A revision's SQL expression inside a query that also takes parameters (`%` doubled)."""
    from psycopg import sql as psql

    return psql.SQL(text.replace("%", "%%"))


def primary_key(conn: psycopg.Connection[Any], table: str) -> list[tuple[str, str]]:
    """The primary key's columns of `table`, in key order, with their types."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) "
        "FROM pg_index AS i CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY "
        "AS k(attnum, position) "
        "JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = to_regclass(quote_ident(%s)) AND i.indisprimary ORDER BY k.position",
        (table,),
    ).fetchall()
    if not rows:
        raise MigrationError(
            f"backfill of {table}: no such table, or it has no primary key (the batches walk "
            "it in key order); add one first."
        )
    return [(str(column), str(type_name)) for column, type_name in rows]


# The same loop as Batches, in PL/pgSQL: @NAME@-style markers are filled by offline_sql().
OFFLINE_LOOP = """DO $uaip_backfill$
DECLARE
    picked text; ordered text; descending text; target text; aliases text;
    as_text text; after text; cursor_key text[]; done bigint; finished boolean;
BEGIN
    SELECT string_agg(format('%I AS uaip_key_%s', a.attname, k.n), ', ' ORDER BY k.n),
           string_agg(quote_ident(a.attname), ', ' ORDER BY k.n),
           string_agg(format('uaip_key_%s DESC', k.n), ', ' ORDER BY k.n),
           string_agg(format('%I.%I', @TABLE@, a.attname), ', ' ORDER BY k.n),
           string_agg(format('uaip_key_%s', k.n), ', ' ORDER BY k.n),
           string_agg(format('uaip_key_%s::text', k.n), ', ' ORDER BY k.n),
           format('(%s) > (%s)',
                  string_agg(quote_ident(a.attname), ', ' ORDER BY k.n),
                  string_agg(format('CAST($1[%s] AS %s)', k.n,
                                    format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY k.n))
      INTO picked, ordered, descending, target, aliases, as_text, after
      FROM pg_index AS i
      CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
      JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = quote_ident(@TABLE@)::regclass AND i.indisprimary;
    IF picked IS NULL THEN
        RAISE EXCEPTION 'backfill of %: it has no primary key', @TABLE@;
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
        PERFORM set_config(@BACKFILLING@, 'on', true);
@EXACT_KEY_TEXT@
        EXECUTE format(
            'WITH batch AS (SELECT %s FROM %I WHERE %s AND (%s) ORDER BY %s LIMIT %s '
            '), updated AS (UPDATE %I SET %s FROM batch '
            'WHERE (%s) = (%s) AND (%s) RETURNING 1) SELECT (SELECT count(*) FROM updated), '
            '(SELECT ARRAY[%s] FROM batch ORDER BY %s LIMIT 1)',
            picked, @TABLE@, CASE WHEN cursor_key IS NULL THEN 'true' ELSE after END,
            @WHERE@, ordered, @BATCH_ROWS@, @TABLE@, @ASSIGNMENTS@, target, aliases,
            @WHERE@, as_text, descending)
          INTO done, cursor_key USING cursor_key;
        EXIT WHEN cursor_key IS NULL;
        UPDATE @PROGRESS@ SET last_key = cursor_key, rows_done = rows_done + done,
               updated_at = now() WHERE name = @NAME@;
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
    from psycopg import sql as psql

    assignments_sql = ", ".join(
        f"{psql.Identifier(column).as_string(None)} = ({expression})"
        for column, expression in assignments.items()
    )
    pause = f"{batch_rows / rows_per_second:.3f}" if rows_per_second else "0"
    values = {
        "@TABLE@": _literal(table),
        "@PROGRESS@": PROGRESS_TABLE,
        "@NAME@": _literal(name),
        "@LOCK_TIMEOUT@": _literal(lock_timeout),
        "@STATEMENT_TIMEOUT@": _literal(statement_timeout),
        "@WHERE@": _literal(where or "true"),
        "@BATCH_ROWS@": str(int(batch_rows)),
        "@ASSIGNMENTS@": _literal(assignments_sql),
        "@PAUSE@": pause,
        "@BACKFILLING@": _literal(BACKFILLING),
        "@EXACT_KEY_TEXT@": "\n".join(
            f"        PERFORM set_config({_literal(setting)}, {_literal(value)}, true);"
            for setting, value in EXACT_KEY_TEXT.items()
        ),
    }
    loop = OFFLINE_LOOP
    for marker, value in values.items():
        loop = loop.replace(marker, value)
    header = [
        f"-- uaip_db.ops.backfill: UPDATE {table} SET {assignments_sql}",
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
