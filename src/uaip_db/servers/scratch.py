"""Throwaway databases for tests, Nox sessions and the commands that need one (a backup's restore
check, rehearsals, round trips, snapshots, docs); the developer's database is never touched.

By default a private cluster is started for the run (tmpfs when there is room, fsync off) and
stopped when the run ends, even when the run is killed (the server gets a parent-death signal).
Tests and nox make uniquely named databases on the server the settings name only with
`UAIP_TEST_SERVER=env`; settings alone never send tests to a developer's server. Commands follow
`UAIP_SCRATCH_URL` (an admin connection, on this or another server) or `UAIP_SCRATCH=local|env`
(scratch_place); a server named there is checked first (it must accept writes and the
role must be allowed to create databases), so a command says which setting to change before it
does anything. Each database can be cloned from a template in milliseconds (`STRATEGY FILE_COPY`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uaip_db import pg, process
from uaip_db.errors import ServerError, SettingsError, UaipDbError
from uaip_db.servers.binaries import Binaries, find_binaries
from uaip_db.servers.local import Cluster, PidFile
from uaip_db.servers.pristine import pristine_data, sweep_abandoned_builds
from uaip_db.settings import (
    SCRATCH,
    SCRATCH_SETTING,
    SCRATCH_URL,
    SCRATCH_URL_SETTING,
    TEST_SERVER,
    TEST_SERVER_SETTING,
    DatabaseConfig,
)

if TYPE_CHECKING:
    import psycopg

SCRATCH_USER = "uaip_user"
TMPFS = Path("/dev/shm")
TMPFS_MIN_FREE = 1 << 30
SCRATCH_PREFIX = "uaip-scratch-"
FAST_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "120",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",
}
# Each connection's SCRAM exchange hashes the password scram_iterations times on both sides:
# at PostgreSQL's default 4096 that is about half of a connection's 5 ms here, and the suite and
# the commands' throwaway databases open tens of thousands. The verifier lives only in this
# private, short-lived cluster (0700, 127.0.0.1) with a random password. PostgreSQL 16 has it.
SCRAM_ITERATIONS = 1
FEWER_SCRAM_ITERATIONS_SINCE = 16
OWNER_FILE = "owner.pid"
STALE_AFTER_SECONDS = 600


def scratch_password() -> str:
    """A password with every character that breaks naive URL or command-line handling."""
    return "p@ss:w/rd%#' " + secrets.token_hex(4)


class ScratchServer:
    """A server on which throwaway databases are created and dropped."""

    def __init__(self, admin: DatabaseConfig, cluster: ScratchCluster | None = None) -> None:
        self.admin = admin
        self.cluster = cluster
        self._conn: psycopg.Connection[Any] | None = None
        self._created: set[str] = set()

    def connection(self, setting: str | None = None) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = pg.connect(
                self.admin.with_database(pg.MAINTENANCE_DATABASE), setting=setting
            )
        return self._conn

    def check_usable(self, place: ScratchPlace, for_tests: bool = False) -> None:
        """Refuse, naming the setting to change, a server that cannot hold throwaway databases:
        a read-only one, or a role that may not create databases."""
        setting = SCRATCH_URL_SETTING if place.chosen_by == SCRATCH_URL_SETTING else None
        conn = self.connection(setting)
        where = f"{self.admin.host}:{self.admin.port}"
        reason = pg.read_only_reason(conn)
        if reason is not None:
            raise unusable_place(place, f"the server at {where} {reason}", for_tests)
        if not pg.may_create_databases(conn):
            raise unusable_place(
                place, f"the role {self.admin.user} may not create databases on {where}", for_tests
            )

    def disk(self) -> str:
        """Where this server keeps its databases, in words: a private cluster's data folder, or
        the server a setting names (whose disk this machine cannot see)."""
        if self.cluster is not None:
            return f"data folder {self.cluster.cluster.data}"
        named = f", named by {self.admin.origin}" if self.admin.origin else ""
        return f"the server at {self.admin.host}:{self.admin.port}{named}"

    def config_for(self, name: str) -> DatabaseConfig:
        return self.admin.with_database(name)

    def create_database(
        self, prefix: str = "uaip_test", template: str | None = None
    ) -> DatabaseConfig:
        name = f"{prefix}_{secrets.token_hex(4)}"
        pg.create_database(self.connection(), name, template=template, file_copy=bool(template))
        self._created.add(name)
        return self.config_for(name)

    def drop_database(self, name: str) -> None:
        pg.drop_database(self.connection(), name)
        self._created.discard(name)

    def mark_template(self, name: str) -> None:
        """Let `name` be cloned: no connection may stay open to a template."""
        pg.set_template(self.connection(), name, True)

    def close(self) -> None:
        if self.cluster is None:
            for name in list(self._created):
                with contextlib.suppress(Exception):
                    pg.set_template(self.connection(), name, False)
                    self.drop_database(name)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.cluster is not None:
            self.cluster.stop()


@dataclass(frozen=True)
class ScratchPlace:
    """Where throwaway databases are made: on the server of `admin` (a role that may create
    databases), or, when it is None, on a private server started from this machine's PostgreSQL
    binaries. `chosen_by` names the setting that chose it, for messages."""

    admin: DatabaseConfig | None
    chosen_by: str

    @property
    def is_local(self) -> bool:
        return self.admin is None


def scratch_place(environ: Mapping[str, str] | None = None) -> ScratchPlace:
    """`UAIP_SCRATCH_URL` (an admin connection), else `UAIP_SCRATCH` (`local`: a private server;
    `env`: the server and role the settings name), else `UAIP_TEST_SERVER=env` as `env`, else
    local."""
    admin = SCRATCH_URL.read(environ)
    chosen = SCRATCH.read(environ)
    if admin is not None and chosen is not None:
        raise SettingsError(
            f"Both {SCRATCH_URL.name} and {SCRATCH.name} say where throwaway databases are "
            "made; unset one."
        )
    if admin is not None:
        # Its connection errors name the setting (the admin connection may fail mid-run too).
        return ScratchPlace(replace(admin, origin=SCRATCH_URL.name), SCRATCH_URL.name)
    if chosen is None and TEST_SERVER.read(environ) == "env":
        return ScratchPlace(DatabaseConfig.from_env(environ), f"{TEST_SERVER.name}=env")
    if chosen == "env":
        return ScratchPlace(DatabaseConfig.from_env(environ), f"{SCRATCH.name}=env")
    return ScratchPlace(None, f"{SCRATCH.name}={chosen}" if chosen else "the default")


def wants_existing_server(environ: Mapping[str, str] | None = None) -> bool:
    """Only `UAIP_TEST_SERVER=env` sends throwaway databases to the server the settings name:
    a developer who exports DB_PORT to reach their own server must never see tests there."""
    return TEST_SERVER.read(environ) == "env"


def start_scratch_server(
    major: int | None = None, place: ScratchPlace | None = None
) -> ScratchServer:
    """A server for throwaway databases at `place` (default, for tests and nox: the server the
    settings name when UAIP_TEST_SERVER=env, else a private cluster of PostgreSQL `major`,
    default UAIP_PG_VERSION, else 16). A server that exists is checked before it is used."""
    for_tests = place is None
    if place is None:
        place = ScratchPlace(
            DatabaseConfig.from_env() if wants_existing_server() else None,
            f"{TEST_SERVER_SETTING}=env",
        )
        hint = f"Tests may use a server you name: {TEST_SERVER_SETTING}=env."
    else:
        hint = (
            f"Or make throwaway databases on a server you name: {SCRATCH_URL_SETTING}="
            "postgresql://ADMIN:PASSWORD@HOST:PORT/postgres."
        )
    if place.admin is None:
        cluster = ScratchCluster.start(major, hint)
        return ScratchServer(cluster.admin, cluster)
    server = ScratchServer(place.admin)
    server.check_usable(place, for_tests)
    return server


@contextlib.contextmanager
def scratch_server() -> Iterator[ScratchServer]:
    """The server a command makes its throwaway databases on (scratch_place)."""
    server = start_scratch_server(place=scratch_place())
    try:
        yield server
    finally:
        server.close()


def unusable_place(place: ScratchPlace, problem: str, for_tests: bool = False) -> SettingsError:
    """Why throwaway databases cannot be made where `place` says, and which setting to change
    (tests and nox follow UAIP_TEST_SERVER alone)."""
    if for_tests:
        way_out = f"unset {TEST_SERVER_SETTING} to start a private server instead"
    else:
        way_out = (
            f"set {SCRATCH_URL_SETTING}=postgresql://ADMIN:PASSWORD@HOST:PORT/postgres (a role "
            f"with CREATEDB on a writable server, this or another), or {SCRATCH_SETTING}=local "
            "(a private server from this machine's PostgreSQL binaries)"
        )
    return SettingsError(
        f"Throwaway databases (chosen by {place.chosen_by}) cannot be made: {problem}. To fix it, "
        f"{way_out}."
    )


class ScratchCluster:
    """A private PostgreSQL for one run, a direct child of this process."""

    def __init__(
        self,
        cluster: Cluster,
        child: process.Popen[bytes],
        admin: DatabaseConfig,
        binaries: Binaries,
    ) -> None:
        self.cluster = cluster
        self.process = child
        self.admin = admin
        self.binaries = binaries

    @classmethod
    def start(cls, major: int | None = None, hint: str = "") -> ScratchCluster:
        """A private server run by the binaries of `major` (default: UAIP_PG_VERSION, else
        16), fetched first when missing; ServerError saying what to do when none can be
        had, with `hint` (the setting that names a server instead)."""
        try:
            binaries = find_binaries(major)
        except ServerError as error:
            raise ServerError(f"{error} {hint}".strip()) from None
        sweep_stale_clusters()
        root = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=scratch_parent()))
        try:
            (root / OWNER_FILE).write_text(str(os.getpid()))
            scratch = cls._start_in(Cluster(root, binaries.bindir), binaries)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        atexit.register(scratch.stop)
        return scratch

    @classmethod
    def _start_in(cls, cluster: Cluster, binaries: Binaries) -> ScratchCluster:
        """Copy the cached initdb folder (servers.pristine), else run initdb; start the server."""
        password = scratch_password()
        settings = {**FAST_SETTINGS, "unix_socket_directories": str(cluster.socket_dir)}
        if (binaries.major or 0) >= FEWER_SCRAM_ITERATIONS_SINCE:
            settings["scram_iterations"] = str(SCRAM_ITERATIONS)
        pristine = pristine_data(binaries.bindir, SCRATCH_USER, cluster.root.parent)
        if pristine is not None:
            try:
                pristine.copy_to(cluster)
                cluster.configure(settings)
            except ServerError:  # a damaged cache: forget it (the next start makes it again)
                pristine.forget()
                pristine = None
        if pristine is not None:
            child: process.Popen[bytes] | None = None
            try:
                child, admin = launch_ready(cluster, pristine.password)
                set_password(admin, password)
                return cls(cluster, child, replace(admin, password=password), binaries)
            except BaseException as error:
                if child is not None:
                    stop_process(child)
                if not isinstance(error, UaipDbError):
                    raise
                pristine.forget()  # a damaged cache: the next start makes it again
        shutil.rmtree(cluster.data, ignore_errors=True)
        cluster.initialize(SCRATCH_USER, password, settings, sync=False)
        child, admin = launch_ready(cluster, password)
        set_password(admin, password)  # hashed under this server's scram_iterations
        return cls(cluster, child, admin, binaries)

    def stop(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.cluster.root, ignore_errors=True)


def set_password(admin: DatabaseConfig, password: str) -> None:
    """Replace the superuser's password (a copied data folder arrives with the cached one)."""
    from psycopg import sql  # noqa: PLC0415

    with pg.connection(admin) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(admin.user), sql.Literal(password)
            )
        )


def scratch_parent() -> Path:
    if TMPFS.is_dir():
        with contextlib.suppress(OSError):
            stats = os.statvfs(TMPFS)
            if stats.f_bavail * stats.f_frsize >= TMPFS_MIN_FREE:
                return TMPFS
    return Path(tempfile.gettempdir())


def stale_clusters() -> list[Path]:
    """Folders of scratch clusters left by killed runs (owner and server both gone)."""
    found = []
    for parent in {TMPFS, Path(tempfile.gettempdir())}:
        if not parent.is_dir():
            continue
        for root in parent.glob(f"{SCRATCH_PREFIX}*"):
            pid_file = PidFile.read(root / "data")
            if pid_file is not None and pid_file.process_is_postgres():
                continue
            if not _owner_alive(root):
                found.append(root)
    return found


def sweep_stale_clusters() -> list[Path]:
    """Remove the folders of scratch clusters, and the half-built initdb caches, left by killed
    runs; the cluster folders removed."""
    removed = stale_clusters()
    for root in removed:
        shutil.rmtree(root, ignore_errors=True)
    for parent in {TMPFS, Path(tempfile.gettempdir())}:
        if parent.is_dir():
            sweep_abandoned_builds(parent)
    return removed


def _owner_alive(root: Path) -> bool:
    try:
        owner = int((root / OWNER_FILE).read_text())
    except (OSError, ValueError):
        # No owner recorded yet: a run may be creating it right now; leave young folders alone.
        return time.time() - root.stat().st_mtime < STALE_AFTER_SECONDS
    return process.is_running(owner)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def launch_postgres(cluster: Cluster, port: int) -> process.Popen[bytes]:
    with open(cluster.log, "ab") as log:  # the child keeps its own copy of the descriptor
        return process.start(
            [cluster.tool("postgres"), "-D", str(cluster.data), "-p", str(port)],
            as_server=True,
            cwd="/",
            parent_death_signal=signal.SIGQUIT,
            log=log,
        )


def launch_ready(cluster: Cluster, password: str) -> tuple[process.Popen[bytes], DatabaseConfig]:
    """Start the server on a free port (three tries: another program may take the port
    first) and wait until it accepts connections; the server and its admin settings."""
    last_error: ServerError | None = None
    for _attempt in range(3):
        port = free_port()
        child = launch_postgres(cluster, port)
        try:
            cluster.wait_until_ready(child.pid, timeout=60, child=child)
        except ServerError as error:
            last_error = error
            stop_process(child)
            continue
        admin = DatabaseConfig(
            host="127.0.0.1", port=port, name="postgres", user=SCRATCH_USER, password=password
        )
        return child, admin
    assert last_error is not None
    raise last_error


def stop_process(child: process.Popen[bytes]) -> None:
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGINT)  # fast shutdown
    try:
        child.wait(timeout=15)
    except process.TimeoutExpired:
        child.kill()
        child.wait(timeout=5)


def child_env(database: DatabaseConfig) -> dict[str, str]:
    """Variables that point a child process (inv, alembic, pytest) at `database` alone; its own
    throwaway databases follow UAIP_TEST_SERVER like ours, not a caller's UAIP_SCRATCH*."""
    return {
        SCRATCH_URL_SETTING: "",
        SCRATCH_SETTING: "",
        "DATABASE_URL": "",
        "DB_HOST": database.host,
        "DB_PORT": str(database.port),
        "DB_NAME": database.name,
        "DB_USER": database.user,
        "DB_PASSWORD": database.password,
        "DB_ENV": "ci",
    }
