"""Alembic operations (upgrade, downgrade, stamp, history, heads, revision) and the env.py runner.

Every path that migrates, `inv db.*` and plain `alembic` alike, goes through `run_env()`: an
engine built from `DatabaseConfig` (or one handed in through `config.attributes["connection"]`),
`lock_timeout`/`statement_timeout` on the connection, the advisory migration lock, and one
transaction per migration.
"""

from __future__ import annotations

import io
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO, cast

from uaip_db import paths, settings
from uaip_db.catalog import trust
from uaip_db.errors import (
    NotConfirmed,
    StatementLockTimeout,
    UaipDbError,
    UsageError,
)
from uaip_db.migrations import backfill_progress, history, ledger, phases
from uaip_db.migrations.failures import (
    command_error,
    interrupted,
    refuse_dropped_bookkeeping,
    translate,
)
from uaip_db.migrations.lock import DEFAULT_WAIT_SECONDS, migration_lock
from uaip_db.migrations.lock_report import LockRecorder
from uaip_db.pg import connect
from uaip_db.settings import (
    CATALOG_SEARCH_PATH,
    PINNED_SEARCH_PATH,
    DatabaseConfig,
    session_options,
)

if TYPE_CHECKING:
    import psycopg
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import Script
    from sqlalchemy.engine import Connection, Engine

# A statement waits at most this long for a table lock: writers queued behind it wait no longer.
DEFAULT_LOCK_TIMEOUT: str = settings.LOCK_TIMEOUT.default
DEFAULT_STATEMENT_TIMEOUT: str = settings.STATEMENT_TIMEOUT.default
# A revision that hit lock_timeout is rolled back and tried again, after a jittered pause, until
# this many seconds have passed (UAIP_LOCK_BUDGET); UAIP_LOCK_RETRIES can cap the attempts.
DEFAULT_LOCK_BUDGET_SECONDS: float = settings.LOCK_BUDGET.default
FIRST_PAUSE_SECONDS = 0.25
LONGEST_PAUSE_SECONDS = 4.0
# What pg_stat_activity shows for the connection holding the migration lock.
LOCK_APPLICATION = "uaip-db migration"


@dataclass
class RunOptions:
    """What a task asks of one env.py run; plain `alembic` gets the defaults."""

    database: DatabaseConfig | None = None
    lock_wait: float = field(default_factory=lambda: lock_wait_setting())
    report: Callable[[str], None] | None = None
    from_task: bool = False
    direction: str = "upgrade"
    # When set, each applied revision's statements and their relation locks are recorded.
    locks: LockRecorder | None = None
    # The caller already holds the migration lock (see hold_lock()).
    lock_held: bool = False
    # A connection the caller opened to read the database's state, reused for the lock on the
    # first attempt (it saves a connection; the lock closes it).
    lock_connection: psycopg.Connection[Any] | None = None
    # Runs on the migration connection after the last revision (saves a connection to read the
    # outcome).
    after: Callable[[psycopg.Connection[Any]], None] | None = None


def lock_wait_setting() -> float:
    """UAIP_LOCK_WAIT: how long plain `alembic` waits for the migration lock (inv: --lock-wait)."""
    wait: float = settings.LOCK_WAIT.read()
    return wait


def lock_retries_setting() -> int | None:
    """UAIP_LOCK_RETRIES: at most this many retries of a migration that hit lock_timeout (none
    set: as many as UAIP_LOCK_BUDGET allows)."""
    retries: int | None = settings.LOCK_RETRIES.read()
    return retries


def lock_budget_setting() -> float:
    """UAIP_LOCK_BUDGET: seconds a migration may spend retrying after lock timeouts."""
    budget: float = settings.LOCK_BUDGET.read()
    return budget


def alembic_config(
    database: DatabaseConfig | None = None,
    *,
    lock_wait: float = DEFAULT_WAIT_SECONDS,
    report: Callable[[str], None] | None = None,
    stdout: TextIO | None = None,
    direction: str = "upgrade",
    locks: LockRecorder | None = None,
    lock_held: bool = False,
    lock_connection: psycopg.Connection[Any] | None = None,
    after: Callable[[psycopg.Connection[Any]], None] | None = None,
) -> Config:
    from alembic.config import Config  # noqa: PLC0415

    config = Config(str(paths.alembic_ini()))
    if stdout is not None:
        config.stdout = stdout
    config.set_main_option("script_location", str(paths.migrations_dir()))
    config.attributes["uaip_db"] = RunOptions(
        database,
        lock_wait,
        report,
        from_task=True,
        direction=direction,
        locks=locks,
        lock_held=lock_held,
        lock_connection=lock_connection,
        after=after,
    )
    return config


# --- env.py ---------------------------------------------------------------------------------


def run_env(context: EnvironmentContext) -> None:
    """The body of migrations/env.py."""
    options: RunOptions | None = context.config.attributes.get("uaip_db")
    try:
        options = options or RunOptions()
        if context.is_offline_mode():
            _run_env(context, options)
        else:
            chosen = options
            _retrying_lock_timeouts(lambda: _run_env(context, chosen), chosen.report)
    except UaipDbError as error:
        # Tasks report it themselves, and so does env.py under the `alembic` command line (which
        # would otherwise log a CommandError and print it again, with exit status 255).
        if (options is not None and options.from_task) or context.config.cmd_opts is not None:
            raise
        from alembic.util import CommandError  # noqa: PLC0415

        # Alembic called from Python: its callers expect a CommandError.
        raise CommandError(str(error)) from None


def _run_env(context: EnvironmentContext, options: RunOptions) -> None:
    if context.is_offline_mode():
        context.configure(
            url=(options.database or DatabaseConfig.from_env()).sqlalchemy_url(),
            literal_binds=True,
            transaction_per_migration=True,
            dialect_opts={"paramstyle": "named"},
        )
        # psql stops at the first error, whatever -v ON_ERROR_STOP it was given: a revision
        # whose statements failed is never recorded as applied, and nothing after it runs.
        context.get_context().impl.static_output("\\set ON_ERROR_STOP on")
        lock_timeout, statement_timeout = timeouts()
        context.execute(f"SET lock_timeout = '{lock_timeout}'")
        context.execute(f"SET statement_timeout = '{statement_timeout}'")
        with context.begin_transaction():
            context.run_migrations()
        return
    handed = context.config.attributes.get("connection")
    if handed is not None:
        _run_on_handed(context, handed, options)
        return
    database = options.database or DatabaseConfig.from_env()
    if not options.from_task:
        guard_plain_alembic(context, database)
    engine = make_engine(database)
    try:
        with (
            _locked(lambda: _lock_connection(database, options), options),
            engine.connect() as conn,
        ):
            _run_online(context, conn, options)
    except UaipDbError:
        raise
    except Exception as error:
        if interrupted(error):
            raise KeyboardInterrupt from None
        raise translate(error, database, options.direction) from error
    finally:
        engine.dispose()


def _lock_connection(database: DatabaseConfig, options: RunOptions) -> psycopg.Connection[Any]:
    import psycopg  # noqa: PLC0415 (its errors; the module is loaded by then anyway)

    handed, options.lock_connection = options.lock_connection, None
    if handed is not None and not handed.closed and not handed.broken:
        try:
            handed.autocommit = True
            handed.execute(
                "SELECT pg_catalog.set_config('application_name', %s, false), "
                "pg_catalog.set_config('search_path', %s, false)",
                (LOCK_APPLICATION, CATALOG_SEARCH_PATH),
            )
            return handed
        except psycopg.OperationalError:
            # The server ended it while it idled since the plan (idle_session_timeout while
            # Alembic loaded): the lock takes a connection of its own.
            handed.close()
    return connect(
        database,
        application_name=LOCK_APPLICATION,
        options=session_options(search_path=CATALOG_SEARCH_PATH),
    )


# Plain `alembic` commands that change what the database records without applying revisions
# forward: in production they need the database's name spelled out, like `inv` needs --confirm-db.
GUARDED_COMMANDS = ("downgrade", "stamp")


def guard_plain_alembic(context: EnvironmentContext, database: DatabaseConfig) -> None:
    if not database.is_production:
        return
    command = getattr(context.config.cmd_opts, "cmd", None)
    name = getattr(command[0], "__name__", "") if command else ""
    if name not in GUARDED_COMMANDS:
        return
    confirmed = context.get_x_argument(as_dictionary=True).get("confirm-db")
    if confirmed != database.name:
        raise NotConfirmed(
            f"Refusing `alembic {name}` on {database.where()} in production (DB_ENV=production). "
            f"If you mean it, run it again with -x confirm-db={database.name}."
        )


def _run_on_handed(
    context: EnvironmentContext, handed: Engine | Connection, options: RunOptions
) -> None:
    """Alembic's cookbook: the caller hands in an Engine or a Connection. Whichever it is, it is
    left as it was given; the lock lives on a connection of its own (`_own_connection`)."""
    from sqlalchemy.engine import Engine  # noqa: PLC0415

    engine = handed if isinstance(handed, Engine) else handed.engine
    with _locked(lambda: _own_connection(engine), options):
        if isinstance(handed, Engine):
            with handed.connect() as conn:
                _run_online(context, conn, options)
        else:
            _run_online(context, handed, options)


def _own_connection(engine: Engine) -> psycopg.Connection[Any]:
    """A new connection made the way `engine` makes them, but not one of its pool's: a copy of
    the pool (same creator and events) makes it and lets go of it, so the caller's pool, its
    limits and its connections stay as they were (the lock closes this one)."""
    import psycopg  # noqa: PLC0415

    pool = engine.pool.recreate()
    try:
        pooled = pool.connect()
        driver = pooled.driver_connection
        pooled.detach()
    finally:
        pool.dispose()
    if not isinstance(driver, psycopg.Connection):
        pooled.close()
        raise UsageError(
            f"The engine handed to Alembic uses the {engine.dialect.driver} driver; these "
            "migrations run on psycopg 3: create it with a postgresql+psycopg:// URL."
        )
    driver.autocommit = True
    driver.execute("SELECT pg_catalog.set_config('search_path', %s, false)", (CATALOG_SEARCH_PATH,))
    return driver


def _run_online(context: EnvironmentContext, conn: Connection, options: RunOptions) -> None:
    bookkeeping: dict[str, int] = {}
    if options.locks is not None:
        options.locks.attach(conn)
    context.configure(
        connection=conn,
        target_metadata=None,
        transaction_per_migration=True,
        # Where the version table is does not follow a search_path a revision SET.
        version_table_schema=PINNED_SEARCH_PATH,
        on_version_apply=_on_version_apply(options.report, options.locks, bookkeeping),
    )
    # Before Alembic or a revision touches anything: no bookkeeping table of another role's (or
    # with a trigger, rule or policy) and nothing in public that shadows pg_catalog (issue 24).
    driver = conn.connection.driver_connection
    assert driver is not None
    trust.check(cast("psycopg.Connection[Any]", driver), (PINNED_SEARCH_PATH,))
    # The bookkeeping tables there are now: a revision that drops one is refused (issue 24).
    bookkeeping.update(
        trust.bookkeeping_tables(cast("psycopg.Connection[Any]", driver), (PINNED_SEARCH_PATH,))
    )
    with context.begin_transaction():
        context.run_migrations()
    if options.after is not None:
        driver = conn.connection.driver_connection
        assert driver is not None
        try:
            options.after(cast("psycopg.Connection[Any]", driver))
        finally:
            driver.rollback()


@contextmanager
def _locked(
    open_connection: Callable[[], psycopg.Connection[Any]], options: RunOptions
) -> Iterator[None]:
    if options.lock_held:
        yield
        return
    with migration_lock(open_connection, options.lock_wait, options.report):
        yield


def timeouts() -> tuple[str, str]:
    """Migration lock_timeout and statement_timeout (UAIP_LOCK_TIMEOUT, UAIP_STATEMENT_TIMEOUT)."""
    return settings.LOCK_TIMEOUT.read(), settings.STATEMENT_TIMEOUT.read()


@contextmanager
def hold_lock(
    database: DatabaseConfig,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
    report: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the migration lock across several steps (pass lock_held=True to the migrations)."""

    def open_connection() -> psycopg.Connection[Any]:
        return connect(
            database,
            application_name=LOCK_APPLICATION,
            options=session_options(search_path=CATALOG_SEARCH_PATH),
        )

    with migration_lock(open_connection, wait_seconds, report):
        yield


def make_engine(database: DatabaseConfig) -> Engine:
    from sqlalchemy import create_engine  # noqa: PLC0415
    from sqlalchemy.pool import NullPool  # noqa: PLC0415

    lock_timeout, statement_timeout = timeouts()
    options = session_options(lock_timeout=lock_timeout, statement_timeout=statement_timeout)
    # Every connection goes through pg.connect: explicit parameters, no inherited PG* variables.
    return create_engine(
        "postgresql+psycopg://",
        poolclass=NullPool,
        creator=lambda: connect(database, autocommit=False, options=options),
    )


def recorded_phase(revision: str) -> str | None:
    """The phase the ledger keeps for `revision` (declared, else judged; migrations/phases.py)."""
    item = history.load().get(revision)
    return phases.phase_of(item) if item is not None else None


def _on_version_apply(
    report: Callable[[str], None] | None,
    locks: LockRecorder | None = None,
    bookkeeping: dict[str, int] | None = None,
) -> Callable[..., None]:
    """After each step, inside its transaction: refuse a revision that dropped a bookkeeping
    table (`bookkeeping`: the ones there are, filled before the first step), keep the ledger,
    and say what was done."""
    known = bookkeeping if bookkeeping is not None else {}

    started = time.perf_counter()

    def on_version_apply(*, ctx: Any, step: Any, **_: Any) -> None:
        nonlocal started
        now = time.perf_counter()
        elapsed, started = now - started, now
        # The psycopg connection under SQLAlchemy's, in the same transaction as the migration.
        conn = ctx.connection.connection.driver_connection
        # What a revision SET for its session (session_replication_role, lock_timeout,
        # search_path, a role) ends with it: the bookkeeping below and every later revision start
        # from the session's own settings, the pinned search_path and timeouts included.
        conn.execute("RESET ALL")
        present = trust.bookkeeping_tables(conn, (PINNED_SEARCH_PATH,))
        refuse_dropped_bookkeeping(step, known, present)
        if locks is not None and step.is_upgrade and not step.is_stamp:
            locks.finish(step.up_revision_id)
        if not step.is_stamp:
            backfill_progress.forget_finished(conn)
        if step.is_upgrade:
            for revision in step.destination_revision_ids:
                script = ctx.script.get_revision(revision)
                how = "stamp" if step.is_stamp else "upgrade"
                ledger.record(
                    conn,
                    revision,
                    script.path,
                    how,
                    None if step.is_stamp else round(elapsed * 1000),
                    recorded_phase(revision),
                )
        else:
            ledger.forget(conn, list(step.source_revision_ids))
        # The ledger (made by the first revision's record) is watched from here on.
        if f"{PINNED_SEARCH_PATH}.{ledger.LEDGER_TABLE}" not in present:
            present = trust.bookkeeping_tables(conn, (PINNED_SEARCH_PATH,))
        known.clear()
        known.update(present)
        if report is None:
            return
        revision = step.up_revision
        if step.is_stamp:
            verb = "stamped"
        elif step.is_upgrade:
            verb = "applied"
        else:
            verb = "reverted"
        report(f"  {verb} {revision.revision} ({revision.doc}) in {elapsed:.2f} s")

    return on_version_apply


# --- operations ------------------------------------------------------------------------------


def _run_command(name: str, *args: Any, **kwargs: Any) -> None:
    from alembic import command  # noqa: PLC0415
    from alembic.util import CommandError  # noqa: PLC0415

    try:
        getattr(command, name)(*args, **kwargs)
    except CommandError as error:
        raise command_error(error) from None


def upgrade(
    database: DatabaseConfig,
    revision: str = "head",
    *,
    sql: bool = False,
    lock_wait: float = DEFAULT_WAIT_SECONDS,
    report: Callable[[str], None] | None = None,
    locks: LockRecorder | None = None,
    lock_held: bool = False,
    lock_connection: psycopg.Connection[Any] | None = None,
    after: Callable[[psycopg.Connection[Any]], None] | None = None,
) -> None:
    """Upgrade to `revision`. `lock_connection` (an open connection to `database`) becomes the
    lock's and is closed; `after` reads the outcome on the migration connection."""
    config = alembic_config(
        database,
        lock_wait=lock_wait,
        report=report,
        direction="upgrade",
        locks=locks,
        lock_held=lock_held,
        lock_connection=lock_connection,
        after=after,
    )
    _run_command("upgrade", config, revision, sql=sql)


def downgrade(
    database: DatabaseConfig,
    revision: str = "-1",
    *,
    sql: bool = False,
    lock_wait: float = DEFAULT_WAIT_SECONDS,
    report: Callable[[str], None] | None = None,
    lock_held: bool = False,
    after: Callable[[psycopg.Connection[Any]], None] | None = None,
) -> None:
    """Downgrade to `revision`; `after` reads the outcome on the migration connection."""
    config = alembic_config(
        database,
        lock_wait=lock_wait,
        report=report,
        direction="downgrade",
        lock_held=lock_held,
        after=after,
    )
    _run_command("downgrade", config, revision, sql=sql)


def _retrying_lock_timeouts(run: Callable[[], None], report: Callable[[str], None] | None) -> None:
    """A lock timeout rolls the revision back cleanly (the ones before it stay applied); pause a
    jittered, growing while, and go on from where the database is, within the budget.

    Short waits repeated beat one long wait: a statement queued for a table lock makes every
    writer queue behind it, so no writer waits longer than lock_timeout at a time.
    """
    retries = lock_retries_setting()
    budget = lock_budget_setting()
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            run()
            return
        except StatementLockTimeout as error:
            attempt += 1
            spent = time.monotonic() - started
            pause = min(LONGEST_PAUSE_SECONDS, FIRST_PAUSE_SECONDS * 2 ** (attempt - 1))
            pause *= random.uniform(0.5, 1.5)
            if (retries is not None and attempt > retries) or spent + pause > budget:
                raise StatementLockTimeout(
                    f"{error} Gave up after {attempt} attempt(s) in {spent:.1f} s; find the long "
                    "transaction in pg_stat_activity, or raise UAIP_LOCK_BUDGET."
                ) from None
            if report:
                report(f"  {error} Trying again in {pause:.1f} s.")
            time.sleep(pause)


def stamp(
    database: DatabaseConfig,
    revision: str,
    *,
    lock_wait: float = DEFAULT_WAIT_SECONDS,
    lock_held: bool = False,
) -> None:
    config = alembic_config(database, lock_wait=lock_wait, lock_held=lock_held)
    _run_command("stamp", config, revision)


def render_sql(start: str, end: str, *, downgrade: bool = False) -> str:
    """The SQL from `start` to `end` as offline mode prints it (`alembic upgrade a:b --sql`)."""

    from alembic import command  # noqa: PLC0415

    buffer = io.StringIO()
    config = alembic_config(DatabaseConfig())
    config.output_buffer = buffer
    if downgrade:
        command.downgrade(config, f"{start}:{end}", sql=True)
    elif start == "base":
        command.upgrade(config, end, sql=True)
    else:
        command.upgrade(config, f"{start}:{end}", sql=True)
    return buffer.getvalue()


def show_history(stdout: TextIO, verbose: bool = False) -> None:
    """Alembic's history listing, written to `stdout` (the cli passes the terminal)."""
    _run_command("history", alembic_config(stdout=stdout), verbose=verbose, indicate_current=False)


def new_revision(message: str) -> Script:
    from alembic import command  # noqa: PLC0415

    if not message.strip():
        raise UsageError('A revision needs a message: inv db.revision -m "what it changes".')
    if '"""' in message or "\\" in message or "\n" in message.strip():
        raise UsageError(
            'A revision message is one line without """ or backslashes (it becomes the '
            "file's docstring); rephrase it."
        )
    config = alembic_config()
    script = command.revision(config, message=message.strip())
    assert script is not None and not isinstance(script, list)
    return script
