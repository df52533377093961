"""Fixtures: one throwaway PostgreSQL per run, one database per test cloned from a template."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.servers.roles import url
from uaip_db.backups import workload
from uaip_db.catalog import expected
from uaip_db.catalog.snapshot import Snapshot
from uaip_db.migrations import history, runner
from uaip_db.servers.scratch import (
    ScratchServer,
    child_env,
    scratch_parent,
    start_scratch_server,
)
from uaip_db.settings import (
    SCRATCH_SETTING,
    SCRATCH_URL_SETTING,
    TEST_SERVER_SETTING,
    DatabaseConfig,
)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The chain, head and tables come from the scripts and the committed snapshots, so adding a
# revision changes no test. Tests about specific history name those revisions.
BASELINE, EMAIL, WIDEN, COMMENTS = "03033cebb647", "8f2b6c1d4e7a", "b41d9e0c7f25", "d7c3a9e5f1b2"
CHAIN = [item.revision for item in history.load().order]
HEAD = history.load().single_head()
HEAD_TABLES = sorted(expected.snapshot(HEAD).tables())


@dataclass(frozen=True)
class FreeColumn:
    """A column of sessions that tests may index, constrain, narrow, drop and write as they
    like: nullable, character varying, and nothing names it (no index, constraint, trigger,
    function, view or default). Found in the head snapshot, so a revision that renames or drops
    the one of today (project_name) changes no test."""

    name: str
    type: str  # "character varying(500)"
    length: int  # 500


def free_column(snapshot: Snapshot, table: str = "sessions") -> FreeColumn:
    columns = {
        name.split(".", 1)[1]: attributes
        for name, attributes in snapshot.of_kind("column").items()
        if name.startswith(f"{table}.")
    }
    definitions = [
        text
        for attributes in snapshot.objects.values()
        for text in (attributes.get("definition"), attributes.get("body"))
        if isinstance(text, str)
    ]
    for name, attributes in sorted(columns.items()):
        varchar = re.fullmatch(r"character varying\((\d+)\)", attributes["type"])
        named = any(re.search(rf"\b{re.escape(name)}\b", text) for text in definitions)
        if varchar and not attributes["not_null"] and "default" not in attributes and not named:
            return FreeColumn(name, attributes["type"], int(varchar.group(1)))
    raise LookupError(
        f"the head schema has no nullable varchar column of {table} that nothing names: "
        "tests/conftest.py FREE_COLUMN needs another stand-in"
    )


FREE_COLUMN = free_column(expected.snapshot(HEAD))
SETTING_NAMES = (
    "DATABASE_URL",
    "DB_HOST",
    "DB_PORT",
    "DB_NAME",
    "DB_USER",
    "DB_PASSWORD",
    "DB_ENV",
)
# Where the commands a test runs make their throwaway databases (_no_developer_settings).
SCRATCH_SETTINGS = (SCRATCH_URL_SETTING, SCRATCH_SETTING)
PLACE_SETTINGS = (*SCRATCH_SETTINGS, TEST_SERVER_SETTING)


# Markers whose tests run only when -m names them, each by a nox session CI runs.
RUN_WHEN_NAMED = ("walk", "docker")
# The modules whose tests take longest (writers for seconds, release rehearsals, runners in
# parallel): they start first, so that none of them starts last while the other workers sit
# idle, and they are marked `slow` (`pytest -m "not slow"` leaves them out). The walks (marker
# `walk`, minutes each) are not in the plain `pytest` at all.
LONGEST_FIRST = (
    "tests/backups/test_rehearse_load.py",
    "tests/test_release.py",
    "tests/migrations/test_safety.py",
)


_BYTECODE_WAS_OFF = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller, before any worker starts
        _temporary_files_in_memory(config)
    _compile_once(config)


def _temporary_files_in_memory(config: pytest.Config) -> None:
    """The tests' temporary files (tmp_path, checkouts, backups, clusters initdb makes) go where
    the throwaway servers go: /dev/shm when it has room (scratch_parent), unless TMPDIR or
    --basetemp says where. The tests create and delete hundreds of thousands of files; on a disk
    that was 6% of the run's CPU (ext4 looking for an inode that was not deleted lately). The
    workers and the programs the tests start inherit TMPDIR."""
    if "TMPDIR" in os.environ or config.option.basetemp:
        return
    parent = scratch_parent()
    if parent.stat().st_mode & 0o1777 != 0o1777:  # not a place for everyone, as /tmp is
        return
    os.environ["TMPDIR"] = str(parent)
    tempfile.tempdir = None  # read TMPDIR again


def _compile_once(config: pytest.Config) -> None:
    """With PYTHONDONTWRITEBYTECODE (CI's machines set it), every worker compiled the test
    modules again (1.4 s each) and each of the ~100 `inv` children the project's modules. The
    repository's own files, which no test changes, are compiled once for all of them; the
    revisions tests write into scratch checkouts still never leave bytecode behind."""
    if not sys.dont_write_bytecode:
        return
    if not hasattr(config, "workerinput"):  # the controller, before any worker starts
        import compileall

        for folder in ("src", "migrations"):
            compileall.compile_dir(ROOT / folder, quiet=2)
        compileall.compile_file(ROOT / "tasks.py", quiet=2)
    # pytest keeps the test modules' rewritten bytecode only while writing is allowed.
    sys.dont_write_bytecode = False
    config.stash[_BYTECODE_WAS_OFF] = True


def pytest_collection_finish(session: pytest.Session) -> None:
    """Off again once the test modules are in: nothing written later (a scratch checkout's
    revisions) leaves bytecode behind."""
    if session.config.stash.get(_BYTECODE_WAS_OFF, False):
        sys.dont_write_bytecode = True


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: two workers per core. A test spends much of its time waiting for PostgreSQL
    and for the programs it runs (`inv`, pg_dump, pgbench), which a second worker fills."""
    return 2 * (os.cpu_count() or 1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The long end-to-end walks (marked `walk`) and the Docker tests (`docker`) run when -m
    # names them (`pytest -m walk`, `pytest -m docker`, which `nox -s walks docker` run), not in
    # the README's plain `pytest`. A walk counts as slow too, so `pytest -m "not slow"` leaves
    # it out as well.
    for item in items:
        if item.get_closest_marker("walk") or item.nodeid.split("::", 1)[0] in LONGEST_FIRST:
            item.add_marker(pytest.mark.slow)
    for marker in RUN_WHEN_NAMED:
        if not re.search(rf"\b{marker}\b", config.option.markexpr or ""):
            left_out = [item for item in items if item.get_closest_marker(marker)]
            if left_out:
                config.hook.pytest_deselected(items=left_out)
                items[:] = [item for item in items if not item.get_closest_marker(marker)]

    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)
    # Users run the suite as themselves; what only root can do (or what root changes) is a
    # marked group that CI runs as root too (`pytest -m root`).
    if os.geteuid() != 0:
        needs_root = pytest.mark.skip(reason="needs root; CI runs it as root (pytest -m root)")
        for item in items:
            if item.get_closest_marker("root"):
                item.add_marker(needs_root)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which PostgreSQL the tests run on, and where it came from (UAIP_PG_VERSION, default 16)."""
    from uaip_db import pg
    from uaip_db.errors import UaipDbError
    from uaip_db.servers.binaries import find_binaries
    from uaip_db.servers.scratch import wants_existing_server

    try:
        if wants_existing_server():
            named = DatabaseConfig.from_env()  # the environment, then .env, as for commands
            with pg.connection(named.with_database(pg.MAINTENANCE_DATABASE)) as conn:
                version = conn.info.parameter_status("server_version")
            return [f"postgresql: {version}, the server the settings name (UAIP_TEST_SERVER=env)"]
        return [f"postgresql: {find_binaries().describe()}, a throwaway server per run"]
    except UaipDbError as error:
        return [f"postgresql: none ({error})"]


@pytest.fixture(scope="session")
def server() -> Iterator[ScratchServer]:
    scratch = start_scratch_server()
    try:
        yield scratch
    finally:
        scratch.close()


def _template(server: ScratchServer, prefix: str, build: Callable[[DatabaseConfig], None]) -> str:
    database = server.create_database(prefix)
    build(database)
    server.mark_template(database.name)
    return database.name


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder the `postgres` account can reach (pytest's tmp_path is private to root), in the
    temporary folder (_temporary_files_in_memory chooses it)."""
    folder = Path(tempfile.mkdtemp(prefix="uaip-test-shared-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def head_template(server: ScratchServer) -> str:
    return _template(server, "uaip_tpl_head", lambda db: runner.upgrade(db, "head"))


@pytest.fixture(scope="session")
def reader(server: ScratchServer) -> Iterator[str]:
    """A role to grant to; it goes when the databases that name it have been dropped."""
    role = f"uaip_reader_{secrets.token_hex(3)}"
    # A connection each time: one held for the whole session may be ended meanwhile by a test
    # that ends sessions (the teardown then failed on "the connection is closed").
    with psycopg.connect(**server.admin.connect_kwargs(), autocommit=True) as admin:
        admin.execute(psycopg.sql.SQL("CREATE ROLE {}").format(psycopg.sql.Identifier(role)))
    yield role
    with psycopg.connect(**server.admin.connect_kwargs(), autocommit=True) as admin:
        admin.execute(
            psycopg.sql.SQL("DROP ROLE IF EXISTS {}").format(psycopg.sql.Identifier(role))
        )


@pytest.fixture(scope="session")
def behind_revision(server: ScratchServer, head_template: str) -> str:
    """The newest revision before head on which the application runs as workload/ says it runs
    today (its statements, played once, all succeed): where a test that rehearses an upgrade
    under the application starts. Today's revision before head, unless a contract step came
    after the last revision the application ran on (then the one before that, and so on)."""
    database = server.create_database("uaip_behind", template=head_template)
    try:
        for revision in reversed(CHAIN[:-1]):
            runner.downgrade(database, revision)
            if not workload.probe(database):
                return revision
    finally:
        server.drop_database(database.name)
    raise LookupError("workload/ runs at no revision before head: a test cannot rehearse under it")


@pytest.fixture
def behind_db(head_db: DatabaseConfig, behind_revision: str) -> DatabaseConfig:
    return put_behind(head_db, behind_revision)


def put_behind(database: DatabaseConfig, behind_revision: str) -> DatabaseConfig:
    """`database` (at head) at `behind_revision`, with two sessions ('Churn' and 'bad' in
    FREE_COLUMN)."""
    runner.downgrade(database, behind_revision)
    sql(
        database,
        psycopg.sql.SQL("INSERT INTO sessions (user_id, {}) VALUES ('u1', 'Churn'), ('u2', 'bad')")
        .format(psycopg.sql.Identifier(FREE_COLUMN.name))
        .as_string(),
    )
    return database


@pytest.fixture
def empty_db(server: ScratchServer) -> Iterator[DatabaseConfig]:
    database = server.create_database()
    yield database
    server.drop_database(database.name)


@pytest.fixture
def head_db(server: ScratchServer, head_template: str) -> Iterator[DatabaseConfig]:
    database = server.create_database(template=head_template)
    yield database
    server.drop_database(database.name)


@pytest.fixture
def use_db(monkeypatch: pytest.MonkeyPatch) -> Callable[[DatabaseConfig], None]:
    """Point this process's settings (what the steps read) at a database."""

    def point(database: DatabaseConfig) -> None:
        for name, value in database_settings(database).items():
            monkeypatch.setenv(name, value)

    return point


def database_settings(database: DatabaseConfig) -> dict[str, str]:
    """`child_env(database)` without its place for throwaway databases: the commands a test runs
    keep the worker's server (_no_developer_settings)."""
    return {
        name: value for name, value in child_env(database).items() if name not in SCRATCH_SETTINGS
    }


@pytest.fixture(autouse=True)
def _no_developer_settings(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Tests never read the developer's settings: no DB_* or UAIP_SCRATCH* from the shell, no
    repo .env. A test that has the worker's server has the commands it runs make their
    throwaway databases there (UAIP_SCRATCH_URL), as a user who names a server does: a
    private server started for each backup's restore check, rehearsal or snapshot build was
    a third of a second and a data folder copied each, 49 times a run. The tests of the
    private server (UAIP_SCRATCH=local, the default) set that themselves."""
    for name in (*SETTING_NAMES, *SCRATCH_SETTINGS):
        monkeypatch.delenv(name, raising=False)
    if "server" in request.fixturenames:
        server: ScratchServer = request.getfixturevalue("server")
        monkeypatch.setenv(SCRATCH_URL_SETTING, url(server.admin))
    monkeypatch.setenv("UAIP_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setattr("uaip_db.settings.dotenv_file", lambda: tmp_path / "no.env")


def sql(database: DatabaseConfig, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(**database.connect_kwargs(), autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def cli_env(database: DatabaseConfig | None = None, **extra: str) -> dict[str, str]:
    """The environment a child `inv`/`alembic` gets: this one without the developer's
    connection settings (throwaway databases on the worker's server, as this test has them),
    then settings for `database` alone, then `extra` (which, naming a place for throwaway
    databases, names it alone)."""
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    if database is not None:
        env.update(database_settings(database))
    if any(name in extra for name in PLACE_SETTINGS):  # a test that names the place names it alone
        for name in SCRATCH_SETTINGS:
            env.pop(name, None)
    env.update(extra)
    return env


def run_cli(
    program: str,
    *args: str,
    database: DatabaseConfig | None = None,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run `inv`/`alembic` from this venv as a user would, with settings for `database` only."""
    return subprocess.run(
        [str(BIN / program), *args],
        cwd=cwd,
        env=cli_env(database, **(env or {})),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextlib.contextmanager
def _process_state(environ: dict[str, str], cwd: Path, stdin: str) -> Iterator[tuple[Any, Any]]:
    """This process as a child `inv` would see it: `environ` alone, `cwd`, `stdin` (not a
    terminal), and stdout/stderr (Python's and the file descriptors the programs it starts
    inherit) sent to two temporary files; everything put back afterwards."""
    import io
    import logging

    kept_environ, kept_cwd = dict(os.environ), os.getcwd()
    kept_streams = sys.stdin, sys.stdout, sys.stderr
    invoke_logger = logging.getLogger("invoke")
    kept_level, kept_handlers = invoke_logger.level, list(invoke_logger.handlers)
    for stream in kept_streams[1:]:
        stream.flush()
    kept_fds = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(cwd)
        sys.stdin = io.StringIO(stdin)
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)  # noqa: SIM115
        try:
            yield out, err
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdin, sys.stdout, sys.stderr = kept_streams
            os.dup2(kept_fds[0], 1)
            os.dup2(kept_fds[1], 2)
            os.close(kept_fds[0])
            os.close(kept_fds[1])
            os.chdir(kept_cwd)
            os.environ.clear()
            os.environ.update(kept_environ)
            # `inv --debug` turns Invoke's logging on for the whole process.
            invoke_logger.setLevel(kept_level)
            invoke_logger.handlers[:] = kept_handlers


@contextlib.contextmanager
def _time_limit(command: list[str], seconds: float) -> Iterator[None]:
    """Raise subprocess.TimeoutExpired in this (main) thread after `seconds`, as `run_cli`'s
    child would be stopped: a task that hangs fails its test instead of the whole run."""
    import signal

    def expired(signum: int, frame: Any) -> None:
        raise subprocess.TimeoutExpired(command, seconds)

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_inv(
    *args: str,
    database: DatabaseConfig | None = None,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """`inv ARGS` in this process, as `run_cli("inv", ...)` runs it in a child, without the
    0.2 s a child spends starting Python and importing: the same tasks.py found from `cwd`,
    Invoke's parsing, the reporter, the exit status (from `sys.exit`), and stdout/stderr (the
    task's and those of the programs it starts). What only a separate process shows (signals,
    the checkout's own .env, a closed pipe) stays with `run_cli`."""
    from invoke import Program, __version__

    if "db.psql" in args or "--debug" in args:
        # db.psql replaces its process with psql; --debug turns on Invoke's logging, which
        # pytest has configured already.
        raise ValueError(f"{' '.join(args)}: run it in a child, with run_cli")
    program = Program(
        name="Invoke", binary="inv[oke]", binary_names=["invoke", "inv"], version=__version__
    )
    code: int | str | None = 0
    with _process_state(cli_env(database, **(env or {})), cwd, stdin or "") as (out, err):
        try:
            with _time_limit(["inv", *args], timeout):
                program.run(["inv", *args])
        except SystemExit as exit_:
            code = exit_.code
        except subprocess.TimeoutExpired:
            raise  # as from run_cli
        except Exception:  # what Python prints when an exception ends a program
            import traceback

            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", errors="replace")
        stderr = err.read().decode("utf-8", errors="replace")
    if isinstance(code, str):  # sys.exit("message"): printed, status 1
        stderr, code = stderr + code + "\n", 1
    return subprocess.CompletedProcess(["inv", *args], code or 0, stdout, stderr)


REVISION_TEMPLATE = '''"""{doc}

Revision ID: {revision}
Revises: {down_revision}
"""
from alembic import op

revision = "{revision}"
down_revision = "{down_revision}"
branch_labels = None
depends_on = None
{markers}

def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''


def write_revision(
    versions: Path,
    revision: str,
    down_revision: str,
    upgrade: list[str],
    downgrade: list[str],
    doc: str = "Test revision",
    markers: str = "",
) -> Path:
    def body(statements: list[str]) -> str:
        return "\n".join(f"    op.execute({s!r})" for s in statements) or "    pass"

    path = versions / f"{revision}_test.py"
    path.write_text(
        REVISION_TEMPLATE.format(
            doc=doc,
            revision=revision,
            down_revision=down_revision,
            markers=markers,
            upgrade=body(upgrade),
            downgrade=body(downgrade),
        )
    )
    return path


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch copy of the repository's migrations, used by this process and its children."""
    root = copy_of_the_checkout(tmp_path)
    monkeypatch.setenv("UAIP_DB_ROOT", str(root))
    return root


def copy_of_the_checkout(parent: Path) -> Path:
    """`parent`/checkout: what a release or a revision needs of the repository, tasks.py linked."""
    root = parent / "checkout"
    root.mkdir()
    shutil.copy(ROOT / "alembic.ini", root / "alembic.ini")
    shutil.copytree(
        ROOT / "migrations", root / "migrations", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(ROOT / "database", root / "database")
    shutil.copytree(ROOT / "workload", root / "workload")
    (root / "tasks.py").symlink_to(ROOT / "tasks.py")
    return root


def only_history_up_to(checkout: Path, revision: str) -> None:
    """Remove from a scratch `checkout` every revision after `revision` (files and snapshots):
    a test about that part of the history keeps its world when revisions are added later."""
    index = history.load()
    later = [item for item in index.order if item.revision not in index.ancestors([revision])]
    for item in later:
        path = checkout / "migrations" / "versions" / Path(item.path).name
        path.unlink()
        (checkout / "migrations" / "snapshots" / f"{item.revision}.json").unlink(missing_ok=True)
    # Releases of the revisions removed go too: releases.toml may name only revisions there are.
    listed = checkout / "migrations" / "releases.toml"
    removed = {item.revision for item in later}
    entries = re.split(r"(?m)^(?=\[\[release\]\])", listed.read_text())
    kept = [e for e in entries if not any(f'"{gone}"' in e for gone in removed)]
    listed.write_text("".join(kept))


RELEASE_1_2_WORKLOAD = ROOT / "tests" / "release" / "workload_1_2_0"


def as_release_1_2(checkout: Path) -> None:
    """The scratch `checkout` as release 1.2.0 shipped it: the history up to COMMENTS, the
    releases up to 1.2.0 and the application's workload of then. Tests about that history
    (what COMMENTS locks, the guard of WIDEN's downgrade) rehearse it under that application."""
    only_history_up_to(checkout, COMMENTS)
    shutil.rmtree(checkout / "workload")
    shutil.copytree(RELEASE_1_2_WORKLOAD, checkout / "workload")


@pytest.fixture
def at_widen(head_db: DatabaseConfig, checkout: Path) -> DatabaseConfig:
    """Release 1.2.0's checkout (`as_release_1_2`) and a database one revision behind it, at
    WIDEN, with two sessions ('Churn' and 'bad' as project names)."""
    runner.downgrade(head_db, WIDEN)  # by the whole history: the database is at head
    as_release_1_2(checkout)
    sql(
        head_db,
        "INSERT INTO sessions (user_id, project_name) VALUES ('u1', 'Churn'), ('u2', 'bad')",
    )
    return head_db


@contextlib.contextmanager
def small_disk(path: Path, size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes at `path`: a disk that fills up for real (ENOSPC)."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    assert mounted.returncode == 0, mounted.stderr
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def pages(size: int) -> int:
    return -(-size // 4096) * 4096
