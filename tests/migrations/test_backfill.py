"""uaip_db.ops.backfill and the online NOT NULL / foreign key helpers, on real PostgreSQL."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import psycopg
import pytest

from tests.conftest import BIN, HEAD, ROOT, cli_env, run_cli, run_inv, sql
from tests.migrations.test_safety import until
from uaip_db.checks import sample_data
from uaip_db.errors import MigrationError
from uaip_db.migrations import applied, backfill, runner
from uaip_db.settings import DatabaseConfig

GUIDE = ROOT / "docs" / "MIGRATIONS.md"
EXAMPLE = "5eed0c0ffee1"
PROGRESS = backfill.PROGRESS_TABLE
# Each row's updates, counted by a trigger in a table that commits with each batch.
COUNT_UPDATES = """
CREATE TABLE backfill_seen (message_id uuid, txid bigint);
CREATE FUNCTION backfill_seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.content_length IS DISTINCT FROM OLD.content_length THEN
        INSERT INTO backfill_seen VALUES (NEW.message_id, txid_current());
    END IF;
    RETURN NEW;
END $$;
"""
ATTACH_COUNTER = (
    "CREATE TRIGGER backfill_seen AFTER UPDATE ON conversation_history "
    "FOR EACH ROW EXECUTE FUNCTION backfill_seen()"
)


def guide_example() -> str:
    """The worked example revision, as docs/MIGRATIONS.md prints it, on top of today's head."""
    text = GUIDE.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    (example,) = [b for b in blocks if f'revision = "{EXAMPLE}"' in b]
    return re.sub(r'down_revision = "\w+"', f'down_revision = "{HEAD}"', example).replace(
        "Revises: d7c3a9e5f1b2", f"Revises: {HEAD}"
    )


def write_example(checkout: Path, **replace: str) -> Path:
    source = guide_example()
    for old, new in replace.items():
        assert old in source
        source = source.replace(old, new)
    path = checkout / "migrations" / "versions" / f"{EXAMPLE}_content_length.py"
    path.write_text(source, encoding="utf-8")
    return path


def fill(database: DatabaseConfig, messages: int) -> None:
    """`messages` rows in conversation_history (ten per session), every other table filled too,
    from the catalog at the database's revision: no column but the example's own is named."""
    with psycopg.connect(**database.connect_kwargs(), autocommit=True) as conn:
        assert sample_data.fill_many(conn, max(1, messages // 10), per_parent=10) == []
    assert sql(database, "SELECT count(*) FROM conversation_history") == [(messages,)]


def prepare_counter(database: DatabaseConfig) -> None:
    """The column exists before the revision adds it (IF NOT EXISTS), so a trigger can watch it."""
    sql(database, "ALTER TABLE conversation_history ADD COLUMN content_length integer")
    sql(database, COUNT_UPDATES)
    sql(database, ATTACH_COUNTER)


def every_row_once(database: DatabaseConfig) -> None:
    total = sql(database, "SELECT count(*) FROM conversation_history")[0][0]
    assert total > 0
    assert sql(
        database,
        "SELECT count(*) FROM conversation_history WHERE content_length = char_length(content)",
    ) == [(total,)]
    assert sql(database, "SELECT count(*), count(DISTINCT message_id) FROM backfill_seen") == [
        (total, total)
    ]


def test_the_rate_limit_is_a_pause_computed_from_rows_and_time() -> None:
    assert backfill.pause_for_rate(10_000, 0.5, None) == 0
    assert backfill.pause_for_rate(10_000, 0.5, 0) == 0
    assert backfill.pause_for_rate(10_000, 0.5, 5_000) == pytest.approx(1.5)
    assert backfill.pause_for_rate(10_000, 3.0, 5_000) == 0
    assert backfill.pause_for_rate(0, 0.0, 1_000) == 0


def test_progress_says_rows_done_of_total_rate_and_time_left() -> None:
    line = backfill.Progress("conversation_history", 250_000, 1_000_000, 200_000, 4.0).summary()
    assert line == (
        "  backfill conversation_history: 250000 of 1000000 rows (25%), 50,000 rows/s, "
        "about 15 s left"
    )
    done = backfill.Progress("t", 10, 10, 10, 1.0).summary()
    assert "10 of 10 rows (100%)" in done and "left" not in done


def test_the_same_backfill_keeps_its_name() -> None:
    one = backfill.default_name("t", {"a": "1"}, "a IS NULL")
    assert one == backfill.default_name("t", {"a": "1"}, "a IS NULL")
    assert one != backfill.default_name("t", {"a": "2"}, "a IS NULL")


def test_batches_are_separate_transactions_and_report_progress(
    head_db: DatabaseConfig, checkout: Path
) -> None:
    fill(head_db, 1000)
    prepare_counter(head_db)
    write_example(checkout, **{"batch_rows=5_000": "batch_rows=100"})
    lines: list[str] = []
    runner.upgrade(head_db, report=lines.append)
    every_row_once(head_db)
    # 1000 rows, 100 per batch: ten transactions, none holding more than one batch's rows.
    per_transaction = sql(head_db, "SELECT count(*) FROM backfill_seen GROUP BY txid")
    assert sorted(n for (n,) in per_transaction) == [100] * 10
    assert any(
        line.startswith("  backfill conversation_history: 1000 of 1000 rows (100%)")
        for line in lines
    ), lines
    assert sql(head_db, f"SELECT count(*) FROM {PROGRESS}") == [(0,)]
    nullable = sql(
        head_db,
        "SELECT is_nullable FROM information_schema.columns "
        "WHERE table_name = 'conversation_history' AND column_name = 'content_length'",
    )
    assert nullable == [("NO",)]
    assert sql(head_db, "SELECT count(*) FROM pg_constraint WHERE conname LIKE '%not_null'") == [
        (0,)
    ]


def test_a_writer_holding_a_row_makes_one_batch_wait_and_retry(
    head_db: DatabaseConfig, checkout: Path
) -> None:
    fill(head_db, 1000)
    # Paced, so that the row ahead is still ahead when the writer takes it.
    write_example(checkout, **{"batch_rows=5_000": "batch_rows=50, rows_per_second=250"})
    lines: list[str] = []
    failures: list[BaseException] = []

    def upgrade() -> None:
        try:
            runner.upgrade(head_db, report=lines.append)
        except BaseException as error:
            failures.append(error)

    thread = threading.Thread(target=upgrade)
    thread.start()
    writer = psycopg.connect(**head_db.connect_kwargs())
    try:
        until(lambda: rows_done(head_db) >= 50)
        writer.execute(
            "UPDATE conversation_history SET content = content WHERE message_id = "
            "(SELECT message_id FROM conversation_history ORDER BY message_id OFFSET 900 LIMIT 1)"
        )
        until(lambda: any("rows locked by another transaction" in line for line in lines))
        # The batch that wants the row waits; the ones before it are committed, their rows free.
        assert rows_done(head_db) == 900
        with psycopg.connect(**head_db.connect_kwargs(), autocommit=True) as other:
            other.execute("SET lock_timeout = '100ms'")
            other.execute(
                "UPDATE conversation_history SET content = content WHERE message_id = "
                "(SELECT message_id FROM conversation_history ORDER BY message_id LIMIT 1)"
            )
    finally:
        writer.commit()
        writer.close()
        thread.join(timeout=120)
    assert not failures, failures
    assert sql(
        head_db, "SELECT count(*) FROM conversation_history WHERE content_length IS NULL"
    ) == [(0,)]


def rows_done(database: DatabaseConfig) -> int:
    """Rows the backfill has committed so far (0 before it has started)."""
    if sql(database, "SELECT to_regclass(%s)", (PROGRESS,)) == [(None,)]:
        return 0
    return int(sql(database, f"SELECT coalesce(sum(rows_done), 0) FROM {PROGRESS}")[0][0])


def test_killed_half_way_the_next_run_finishes_every_row_exactly_once(
    head_db: DatabaseConfig, checkout: Path
) -> None:
    fill(head_db, 3000)
    prepare_counter(head_db)
    # Paced so that the kill lands in the middle; the run after it goes at full speed.
    write_example(checkout, **{"batch_rows=5_000": "batch_rows=100, rows_per_second=1_500"})
    env = cli_env(head_db, UAIP_DB_ROOT=str(checkout))
    upgrade = subprocess.Popen(
        [str(BIN / "inv"), "db.upgrade"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        until(lambda: rows_done(head_db) >= 500)
    finally:
        os.killpg(upgrade.pid, signal.SIGKILL)
        upgrade.wait()
    done = sql(head_db, f"SELECT rows_done, finished_at FROM {PROGRESS}")
    assert len(done) == 1 and 500 <= done[0][0] < 3000 and done[0][1] is None
    assert sql(head_db, "SELECT count(*) FROM backfill_seen") == [(done[0][0],)]
    assert applied.current_revisions(head_db) == (HEAD,)
    write_example(checkout, **{"batch_rows=5_000": "batch_rows=100"})
    # Resumed, the same backfill (same table, set and where) picks up its progress row.
    result = run_inv("db.upgrade", database=head_db, env={"UAIP_DB_ROOT": str(checkout)})
    assert result.returncode == 0, result.stderr
    assert f"applied {EXAMPLE}" in result.stdout
    assert "backfill conversation_history: 3000 of 3000 rows (100%)" in result.stdout
    every_row_once(head_db)
    assert applied.current_revisions(head_db) == (EXAMPLE,)

    # The counter was made by hand; a downgrade now fails on what it leaves beside the revision's
    # schema when the revision has no committed snapshot to tell it from (issue 25).
    sql(head_db, "DROP TABLE backfill_seen; DROP FUNCTION backfill_seen() CASCADE")
    down = run_inv("db.downgrade", "--yes", database=head_db, env={"UAIP_DB_ROOT": str(checkout)})
    assert down.returncode == 0, down.stderr
    assert applied.current_revisions(head_db) == (HEAD,)
    assert sql(
        head_db,
        "SELECT count(*) FROM information_schema.columns WHERE column_name = 'content_length'",
    ) == [(0,)]


def test_a_revision_failing_after_its_backfill_does_not_backfill_again(
    head_db: DatabaseConfig, checkout: Path
) -> None:
    fill(head_db, 300)
    prepare_counter(head_db)
    # A row the backfill leaves NULL: VALIDATE fails after the backfill finished.
    write_example(
        checkout,
        **{'"content_length IS NULL"': "\"content_length IS NULL AND content <> 'skip'\""},
    )
    sql(
        head_db,
        "UPDATE conversation_history SET content = 'skip' WHERE message_id = "
        "(SELECT min(message_id::text)::uuid FROM conversation_history)",
    )
    with pytest.raises(MigrationError, match="content_length_not_null"):
        runner.upgrade(head_db)
    assert sql(head_db, f"SELECT rows_done, finished_at IS NOT NULL FROM {PROGRESS}") == [
        (299, True)
    ]
    sql(head_db, "UPDATE conversation_history SET content_length = 4 WHERE content = 'skip'")
    lines: list[str] = []
    runner.upgrade(head_db, report=lines.append)
    assert any("already done (299 rows), skipped" in line for line in lines), lines
    assert sql(head_db, "SELECT count(*), count(DISTINCT message_id) FROM backfill_seen") == [
        (300, 300)
    ]
    assert sql(head_db, f"SELECT count(*) FROM {PROGRESS}") == [(0,)]


def test_the_offline_sql_does_the_same_in_batches(head_db: DatabaseConfig, checkout: Path) -> None:
    fill(head_db, 1000)
    prepare_counter(head_db)
    write_example(checkout, **{"batch_rows=5_000": "batch_rows=300"})
    rendered = runner.render_sql(HEAD, EXAMPLE)
    assert "-- uaip_db.ops.backfill: UPDATE conversation_history" in rendered
    assert "COMMIT;" in rendered.split("DO $uaip_backfill$")[1]
    from uaip_db.servers.local import find_bindir

    bindir = find_bindir()
    assert bindir is not None
    result = subprocess.run(
        [str(bindir / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-q"],
        input=rendered,
        env={**os.environ, **head_db.libpq_env()},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("more rows") == 4  # 300 + 300 + 300 + 100
    every_row_once(head_db)
    assert sorted(
        n for (n,) in sql(head_db, "SELECT count(*) FROM backfill_seen GROUP BY txid")
    ) == [
        100,
        300,
        300,
        300,
    ]
    assert applied.current_revisions(head_db) == (EXAMPLE,)


def test_a_foreign_key_is_added_not_valid_then_validated(
    head_db: DatabaseConfig, checkout: Path
) -> None:
    versions = checkout / "migrations" / "versions"
    (versions / "f0e1g2000001_fk.py").write_text(
        f'''"""Test revision"""
from alembic import op

from uaip_db.ops import add_foreign_key, drop_foreign_key

revision = "f0e100000001"
down_revision = "{HEAD}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE checkpoints ADD COLUMN IF NOT EXISTS charter_id uuid")
    add_foreign_key(op, "checkpoints_charter_fk", "checkpoints", ["charter_id"],
                    "project_charters", ["charter_id"], on_delete="set null")


def downgrade() -> None:
    drop_foreign_key(op, "checkpoints_charter_fk", "checkpoints")
    op.execute("ALTER TABLE checkpoints DROP COLUMN IF EXISTS charter_id")
''',
        encoding="utf-8",
    )
    rendered = runner.render_sql(HEAD, "f0e100000001")
    assert "NOT VALID" in rendered and "VALIDATE CONSTRAINT" in rendered
    runner.upgrade(head_db)
    assert sql(
        head_db,
        "SELECT convalidated, confdeltype FROM pg_constraint "
        "WHERE conname = 'checkpoints_charter_fk'",
    ) == [(True, "n")]
    runner.downgrade(head_db, HEAD)
    assert sql(
        head_db, "SELECT count(*) FROM pg_constraint WHERE conname = 'checkpoints_charter_fk'"
    ) == [(0,)]


def test_a_table_without_a_primary_key_is_refused(empty_db: DatabaseConfig) -> None:
    sql(empty_db, "CREATE TABLE keyless (a int)")
    with (
        psycopg.connect(**empty_db.connect_kwargs(), autocommit=True) as conn,
        pytest.raises(MigrationError, match="keyless: no such table, or it has no primary key"),
    ):
        backfill.Batches(conn, "keyless", {"a": "1"}, None, 10, "keyless")


def test_a_row_the_application_fills_meanwhile_keeps_its_value(
    head_db: DatabaseConfig, checkout: Path
) -> None:
    fill(head_db, 500)
    prepare_counter(head_db)
    write_example(
        checkout,
        **{"batch_rows=5_000": 'batch_rows=100, rows_per_second=100, lock_timeout="30s"'},
    )
    failures: list[BaseException] = []

    def upgrade() -> None:
        try:
            runner.upgrade(head_db)
        except BaseException as error:
            failures.append(error)

    thread = threading.Thread(target=upgrade)
    thread.start()
    writer = psycopg.connect(**head_db.connect_kwargs())
    try:
        until(lambda: rows_done(head_db) >= 100)
        # The application writes the new column on a row the third batch will pick.
        writer.execute(
            "UPDATE conversation_history SET content_length = 999 WHERE message_id = "
            "(SELECT message_id FROM conversation_history ORDER BY message_id OFFSET 250 LIMIT 1)"
        )
        until(lambda: sql(head_db, "SELECT count(*) FROM pg_locks WHERE NOT granted") != [(0,)])
    finally:
        writer.commit()
        writer.close()
        thread.join(timeout=120)
    assert not failures, failures
    assert sql(head_db, "SELECT count(*) FROM conversation_history WHERE content_length = 999") == [
        (1,)
    ]
    # The backfill changed every other row once, and not the application's.
    assert sql(head_db, "SELECT count(*), count(DISTINCT message_id) FROM backfill_seen") == [
        (500, 500)
    ]


def test_plain_alembic_shows_the_progress_too(head_db: DatabaseConfig, checkout: Path) -> None:
    fill(head_db, 300)
    write_example(checkout, **{"batch_rows=5_000": "batch_rows=100"})
    result = run_cli("alembic", "upgrade", "head", database=head_db, cwd=checkout)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "backfill conversation_history: 300 of 300 rows (100%)" in output, output
    assert applied.current_revisions(head_db) == (EXAMPLE,)


def run_batches(
    database: DatabaseConfig,
    table: str,
    assignments: dict[str, str],
    *,
    where: str | None = None,
    batch_rows: int = 100,
    name: str | None = None,
) -> None:
    with psycopg.connect(**database.connect_kwargs(), autocommit=True) as conn:
        batches = backfill.Batches(
            conn,
            table,
            assignments,
            where,
            batch_rows,
            name or backfill.default_name(table, assignments, where),
        )
        batches.run(None, "500ms", "60s", lambda _line: None)


def test_float_keys_round_trip_whatever_the_database_says_of_float_digits(
    empty_db: DatabaseConfig,
) -> None:
    sql(empty_db, f'ALTER DATABASE "{empty_db.name}" SET extra_float_digits = -12')
    sql(empty_db, "CREATE TABLE measured (k double precision PRIMARY KEY, done boolean)")
    sql(
        empty_db,
        "INSERT INTO measured SELECT 1000 + g / 1000.0, false FROM generate_series(1, 1000) g",
    )
    run_batches(empty_db, "measured", {"done": "true"}, batch_rows=7)
    assert sql(empty_db, "SELECT count(*) FROM measured WHERE NOT done") == [(0,)]


def test_a_backfill_changed_after_it_stopped_half_way_is_refused(empty_db: DatabaseConfig) -> None:
    sql(empty_db, "CREATE TABLE notes (id int PRIMARY KEY, body text, speaker text)")
    sql(empty_db, "INSERT INTO notes SELECT g, 'b', NULL FROM generate_series(1, 50) AS g")
    # Killed half-way: its record says where it was and what it was doing.
    first = {"speaker": "'assistent'"}
    with psycopg.connect(**empty_db.connect_kwargs(), autocommit=True) as conn:
        batches = backfill.Batches(
            conn, "notes", first, "speaker IS NULL", 10, backfill.default_name("notes", first, None)
        )
        batches._start()
        batches._batch(None, "500ms", "60s")
    corrected = {"speaker": "'assistant'"}
    with pytest.raises(MigrationError, match="was doing something else") as raised:
        run_batches(empty_db, "notes", corrected, where="speaker IS NULL")
    assert "'assistent'" in str(raised.value) and "DELETE FROM" in str(raised.value)
    assert sql(empty_db, "SELECT count(*) FROM notes WHERE speaker = 'assistant'") == [(0,)]


def test_a_backfill_that_sets_the_primary_key_is_refused(empty_db: DatabaseConfig) -> None:
    sql(empty_db, "CREATE TABLE renumbered (id int PRIMARY KEY)")
    with pytest.raises(MigrationError, match=r"sets its primary key \(id\)"):
        run_batches(empty_db, "renumbered", {"id": "id + 1000"})


def test_a_mixed_case_table_offline_is_that_table(head_db: DatabaseConfig) -> None:
    sql(head_db, 'CREATE TABLE "Events" (id int PRIMARY KEY, seen boolean)')
    sql(head_db, "CREATE TABLE events (other int PRIMARY KEY, seen boolean)")
    sql(head_db, 'INSERT INTO "Events" SELECT g, false FROM generate_series(1, 20) AS g')
    sql(head_db, "INSERT INTO events SELECT g, false FROM generate_series(1, 20) AS g")
    text = backfill.offline_sql(
        "Events", {"seen": "true"}, None, 7, None, "events-offline", "500ms", "60s"
    )
    from uaip_db.servers.binaries import client_program

    ran = subprocess.run(
        [client_program("psql"), "-X", "-v", "ON_ERROR_STOP=1", "-q"],
        input=text,
        env={**os.environ, **head_db.libpq_env()},
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert sql(head_db, 'SELECT count(*) FROM "Events" WHERE seen') == [(20,)]
    assert sql(head_db, "SELECT count(*) FROM events WHERE seen") == [(0,)]


def test_a_where_that_tries_a_second_statement_runs_none(empty_db: DatabaseConfig) -> None:
    sql(empty_db, "CREATE TABLE victim (id int PRIMARY KEY)")
    sql(empty_db, "CREATE TABLE marked (id int PRIMARY KEY, done boolean)")
    sql(empty_db, "INSERT INTO marked VALUES (1, false)")
    with pytest.raises(psycopg.Error):
        run_batches(empty_db, "marked", {"done": "true"}, where="true); DROP TABLE victim; --")
    assert sql(empty_db, "SELECT to_regclass('victim') IS NOT NULL") == [(True,)]
    # A `%` in an expression is the SQL's own, not a placeholder.
    sql(empty_db, "CREATE TABLE percent (id int PRIMARY KEY, done boolean)")
    sql(empty_db, "INSERT INTO percent VALUES (1, false)")
    run_batches(empty_db, "percent", {"done": "'50%' LIKE '%\\%'"})
    assert sql(empty_db, "SELECT done FROM percent") == [(True,)]


def test_a_batch_reads_its_key_range_not_the_whole_table(empty_db: DatabaseConfig) -> None:
    # Joining the picked keys back to the table hashed all of it for every batch: a backfill
    # of n rows read n * n / batch_rows rows.
    sql(empty_db, "CREATE TABLE wide (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), n int)")
    sql(empty_db, "INSERT INTO wide (n) SELECT NULL FROM generate_series(1, 50000)")
    sql(empty_db, "ANALYZE wide")
    with psycopg.connect(**empty_db.connect_kwargs(), autocommit=True) as conn:
        batches = backfill.Batches(conn, "wide", {"n": "1"}, "n IS NULL", 500, "wide")
        conn.execute(backfill.CREATE_PROGRESS_TABLE)
        for last_key in (None, ["00000000-0000-0000-0000-000000000000"]):
            with conn.transaction():
                backfill.batch_settings(conn)
                plan = backfill.raw_cursor(conn).execute(
                    "EXPLAIN " + batches.batch_statement, (last_key,)
                )
                text = "\n".join(line for (line,) in plan.fetchall())
            assert "Seq Scan" not in text, text
            assert "Index Cond: (id <= $1)" in text or "(id <= $1)" in text, text
