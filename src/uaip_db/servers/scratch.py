"""Throwaway databases for tests and Nox sessions; the developer's database is never touched.

By default a private cluster is started for the run (tmpfs when there is room, fsync off) and
stopped when the run ends, even when the run is killed (the server gets a parent-death signal).
Only with `UAIP_TEST_SERVER=env` are uniquely named databases made on the server the settings
name instead (and dropped afterwards); settings alone never send tests to a developer's server.
Each database can be cloned from a template in milliseconds (`STRATEGY FILE_COPY`).
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
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uaip_db import pg, process
from uaip_db.errors import ServerError, SettingsError
from uaip_db.servers.binaries import Binaries, find_binaries
from uaip_db.servers.local import Cluster, PidFile
from uaip_db.settings import DatabaseConfig

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

    def connection(self) -> psycopg.Connection[Any]:

        if self._conn is None or self._conn.closed:
            self._conn = pg.connect(self.admin.with_database(pg.MAINTENANCE_DATABASE))
        return self._conn

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


def wants_existing_server(environ: dict[str, str] | None = None) -> bool:
    """Only `UAIP_TEST_SERVER=env` sends throwaway databases to the server the settings name:
    a developer who exports DB_PORT to reach their own server must never see tests there."""
    environ = dict(os.environ if environ is None else environ)
    choice = environ.get("UAIP_TEST_SERVER", "").strip().lower()
    if choice not in ("", "env", "cluster"):
        raise SettingsError(f"UAIP_TEST_SERVER={choice!r} is not known; use env or cluster.")
    return choice == "env"


def start_scratch_server(major: int | None = None) -> ScratchServer:
    """A server for throwaway databases: the one the environment names, else a private cluster
    of PostgreSQL `major` (default: UAIP_PG_VERSION, else 16)."""
    if wants_existing_server():
        return ScratchServer(DatabaseConfig.from_env(dotenv_path=Path("/nonexistent")))
    cluster = ScratchCluster.start(major)
    return ScratchServer(cluster.admin, cluster)


@contextlib.contextmanager
def scratch_server() -> Iterator[ScratchServer]:
    server = start_scratch_server()
    try:
        yield server
    finally:
        server.close()


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
    def start(cls, major: int | None = None) -> ScratchCluster:
        """A private server run by the binaries of `major` (default: UAIP_PG_VERSION, else
        16), fetched first when missing; ServerError saying what to do when none can be
        had (or UAIP_TEST_SERVER=env uses a server you name)."""
        try:
            binaries = find_binaries(major)
        except ServerError as error:
            raise ServerError(
                f"{error} Tests may use a server you name: UAIP_TEST_SERVER=env."
            ) from None
        sweep_stale_clusters()
        root = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=scratch_parent()))
        (root / OWNER_FILE).write_text(str(os.getpid()))
        cluster = Cluster(root, binaries.bindir)
        password = scratch_password()
        cluster.initialize(
            SCRATCH_USER,
            password,
            {**FAST_SETTINGS, "unix_socket_directories": str(cluster.socket_dir)},
            sync=False,
        )
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
            scratch = cls(cluster, child, admin, binaries)
            atexit.register(scratch.stop)
            return scratch
        shutil.rmtree(root, ignore_errors=True)
        assert last_error is not None
        raise last_error

    def stop(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.cluster.root, ignore_errors=True)


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
    """Remove the folders of scratch clusters left by killed runs; the ones removed."""
    removed = stale_clusters()
    for root in removed:
        shutil.rmtree(root, ignore_errors=True)
    return removed


def _owner_alive(root: Path) -> bool:
    try:
        owner = int((root / OWNER_FILE).read_text())
    except (OSError, ValueError):
        # No owner recorded yet: a run may be creating it right now; leave young folders alone.
        return time.time() - root.stat().st_mtime < STALE_AFTER_SECONDS
    try:
        os.kill(owner, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    """Variables that point a child process (inv, alembic, pytest) at `database` alone."""
    return {
        "DATABASE_URL": "",
        "DB_HOST": database.host,
        "DB_PORT": str(database.port),
        "DB_NAME": database.name,
        "DB_USER": database.user,
        "DB_PASSWORD": database.password,
        "DB_ENV": "ci",
    }
