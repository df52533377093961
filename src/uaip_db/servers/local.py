"""Where a database comes from: docker compose, a local cluster in `.pgdata/`, or a server you name.

`choose_backend()` picks Docker when an engine answers, else PostgreSQL server binaries of the
wanted major version (`servers.binaries`: the system's, else a pinned build fetched once);
`inv db.up --backend docker|local` forces one.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from uaip_db import paths, pg, process
from uaip_db.errors import PasswordRefused, ServerError, SettingsError
from uaip_db.servers.binaries import VERSION_SETTING, Binaries, Report, find_binaries, major_of
from uaip_db.settings import PGDATA, DatabaseConfig

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
SOCKET_PATH_LIMIT = 100  # sun_path is 108 bytes; leave room for "/.s.PGSQL.NNNNN"


def conf_value(value: str) -> str:
    """A postgresql.conf string value: quotes doubled, backslashes escaped (a folder may hold
    either)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def find_bindir() -> Path | None:
    """PostgreSQL server binaries of the wanted major (see `servers.binaries`): PG_BINDIR, the
    system's when they are that major, else the pinned release (downloaded once, cached); None
    when none can be had. A malformed UAIP_PG_VERSION raises SettingsError."""
    try:
        return find_binaries().bindir
    except ServerError:
        return None


def port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def server_version(bindir: Path) -> str:
    out = process.run([str(bindir / "postgres"), "--version"], what="read the server version")
    found = re.search(r"\(PostgreSQL\)\s+(\S+)", out.stdout)
    return found.group(1) if found else out.stdout.strip()


@dataclass
class PidFile:
    """The first lines of postmaster.pid: who runs the cluster, and whether it is ready."""

    pid: int
    data_dir: Path
    port: int
    status: str

    @classmethod
    def read(cls, data_dir: Path) -> PidFile | None:
        try:
            lines = (data_dir / "postmaster.pid").read_text().splitlines()
            return cls(int(lines[0]), Path(lines[1]), int(lines[3]), lines[7].strip())
        except (OSError, IndexError, ValueError):
            return None

    def process_is_postgres(self) -> bool:
        try:
            argv0 = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            return False
        return os.path.basename(argv0.decode(errors="replace")).startswith(
            ("postgres", "postmaster")
        )


class Cluster:
    """A PostgreSQL cluster on disk: `root/data`, a socket folder and a server log."""

    def __init__(self, root: Path, bindir: Path) -> None:
        self.root = root
        self.bindir = bindir
        self.data = root / "data"
        self.log = root / "server.log"

    @property
    def socket_dir(self) -> Path:
        own = self.root / "run"
        if len(str(own)) <= SOCKET_PATH_LIMIT - 16:
            return own
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"uaip-db-{digest}"

    def tool(self, name: str) -> str:
        return str(self.bindir / name)

    def exists(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def data_major(self) -> int | None:
        """The major version that made the data folder (its PG_VERSION file)."""
        try:
            return major_of((self.data / "PG_VERSION").read_text())
        except OSError:
            return None

    def initialize(self, user: str, password: str, settings: dict[str, str], sync: bool) -> None:
        """initdb with `user` as superuser, password authentication everywhere, UTF8, C locale."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        password_file = self.root / "initdb.pw"
        password_file.touch(mode=0o600)
        password_file.write_text(password + "\n")
        process.give_to_server_account(self.root)
        process.give_to_server_account(self.socket_dir)
        try:
            process.run(
                [
                    self.tool("initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    user,
                    f"--pwfile={password_file}",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    *([] if sync else ["--no-sync"]),
                ],
                what="create the PostgreSQL cluster (initdb)",
                as_server=True,
            )
        finally:
            password_file.unlink(missing_ok=True)
        self.configure(settings)

    def configure(self, settings: dict[str, str]) -> None:
        """Append `settings` to postgresql.conf (later lines win)."""
        if not settings:
            return
        lines = [f"{key} = {conf_value(value)}" for key, value in settings.items()]
        # Not through a link: as root we write into a folder the server account owns.
        try:
            descriptor = os.open(
                self.data / "postgresql.conf",
                os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK,
            )
            with os.fdopen(descriptor, "a") as conf:
                if not stat.S_ISREG(os.fstat(conf.fileno()).st_mode):
                    raise ServerError(f"{self.data / 'postgresql.conf'} is not a file.")
                conf.write("\n# uaip-db settings\n" + "\n".join(lines) + "\n")
        except OSError as error:
            raise ServerError(
                f"Could not write {self.data / 'postgresql.conf'}: {error.strerror}."
            ) from None

    def running(self) -> PidFile | None:
        pid_file = PidFile.read(self.data)
        if pid_file and pid_file.process_is_postgres():
            return pid_file
        return None

    def wait_until_ready(
        self, pid: int, timeout: float, child: process.Popen[bytes] | None
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid_file = PidFile.read(self.data)
            if pid_file and pid_file.pid == pid and pid_file.status == "ready":
                return
            if child is not None and child.poll() is not None:
                break
            time.sleep(0.01)
        raise ServerError(
            f"PostgreSQL in {self.data} did not become ready: {self.log_tail()} "
            f"(full log: {self.log})."
        )

    def log_tail(self) -> str:
        try:
            lines = [line for line in self.log.read_text(errors="replace").splitlines() if line]
        except OSError:
            return "no server log"
        errors = [line for line in lines if re.search(r"\b(FATAL|ERROR|PANIC)\b", line)]
        return (errors or lines or ["empty server log"])[-1]


def ensure_database(admin: DatabaseConfig, name: str, owner: str) -> bool:
    """Create database `name` owned by `owner` unless it exists; True when it was created."""
    with pg.admin_connection(admin) as conn:
        if pg.database_exists(conn, name):
            return False
        pg.create_database(conn, name, owner=owner)
        return True


def another_major(root: Path, made_by: int, runs: int, database: str) -> str:
    """What to do with a cluster another major made: keep it with its major, or move it up
    through a backup. Never down: pg_restore refuses an archive a newer pg_dump wrote."""
    found = (
        f"The local cluster in {root} was made by PostgreSQL {made_by} (its data/PG_VERSION), "
        f"but db.up now runs PostgreSQL {runs}: keep it with {VERSION_SETTING}={made_by}"
    )
    if runs < made_by:
        return f"{found} (a backup PostgreSQL {made_by} writes cannot be restored into {runs})."
    return (
        f"{found}, or move it to {runs}: `{VERSION_SETTING}={made_by} inv db.up db.backup "
        f"db.down`, remove {root}, then `{VERSION_SETTING}={runs} inv db.up db.restore BACKUP "
        f"--target {database} --yes`."
    )


class LocalCluster:
    """The developer's cluster in `.pgdata/`, on DB_PORT, kept across `db.down` / `db.up`."""

    name = "local"

    def __init__(
        self, root: Path | None = None, bindir: Path | None = None, report: Report | None = None
    ) -> None:
        if bindir is None:
            self.binaries = find_binaries(report=report)
        else:
            self.binaries = Binaries(bindir, server_version(bindir), "PG_BINDIR")
        self.cluster = Cluster(root or local_cluster_root(), self.binaries.bindir)

    def refuse_another_major(self, database: str) -> None:
        """A data folder works with one major version: never start it with another."""
        made_by = self.cluster.data_major()
        runs = self.binaries.major
        if made_by is None or runs is None or made_by == runs:
            return
        raise ServerError(another_major(self.cluster.root, made_by, runs, database))

    def up(self, config: DatabaseConfig) -> str:
        if config.host not in LOCAL_HOSTS:
            raise SettingsError(
                f"DB_HOST={config.host} is not this machine, so db.up cannot start it; "
                "start that server yourself, or set DB_HOST=localhost."
            )
        cluster = self.cluster
        self.refuse_another_major(config.name)
        running = cluster.running()
        if running is None and port_answers("localhost", config.port):
            raise ServerError(
                f"Port {config.port} is already taken by another server; stop it, or set "
                "DB_PORT to a free port."
            )
        created = False
        if not cluster.exists():
            cluster.initialize(
                config.user,
                config.password,
                {
                    "listen_addresses": "localhost",
                    "unix_socket_directories": str(cluster.socket_dir),
                },
                sync=True,
            )
            created = True
        state = "created" if created else "started"
        if running is None:
            cluster.socket_dir.mkdir(parents=True, exist_ok=True)
            process.give_to_server_account(cluster.socket_dir)
            log_existed = cluster.log.exists()
            process.run(
                [
                    cluster.tool("pg_ctl"),
                    "start",
                    "-D",
                    str(cluster.data),
                    "-l",
                    str(cluster.log),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    f"-p {config.port}",
                ],
                what=f"start PostgreSQL in {cluster.data} (see {cluster.log})",
                as_server=True,
            )
            if not log_existed:
                os.chmod(cluster.log, 0o600)
            running = cluster.running()
            if running is None:
                raise ServerError(f"PostgreSQL did not stay up; see {cluster.log}.")
        elif running.port != config.port:
            raise ServerError(
                f"The local cluster already runs on port {running.port}, "
                f"not DB_PORT={config.port}; "
                "run `inv db.down` first, or set DB_PORT to match."
            )
        else:
            state = "already running"
        admin = DatabaseConfig(
            host="localhost", port=config.port, user=config.user, password=config.password
        )
        try:
            made_db = ensure_database(admin, config.name, config.user)
        except PasswordRefused:
            raise SettingsError(
                f"The local cluster in {cluster.root} is {state} on port {config.port}, but it "
                f"refused the password for {config.user}: a cluster keeps the password it was "
                "created with. Set DB_PASSWORD back, or change it in the server (ALTER ROLE)."
            ) from None
        if made_db and not created:
            state += f", database {config.name} created"
        return (
            f"Local PostgreSQL {self.binaries.version} {state}: {config.display_url()} "
            f"(data in {cluster.root}, pid {running.pid})."
        )

    def down(self) -> str:
        cluster = self.cluster
        if cluster.running() is None:
            return f"The local cluster in {cluster.root} is not running."
        process.run(
            [
                cluster.tool("pg_ctl"),
                "stop",
                "-D",
                str(cluster.data),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
            ],
            what=f"stop PostgreSQL in {cluster.data}",
            as_server=True,
        )
        return (
            f"Local PostgreSQL stopped; its data stays in {cluster.root} for the next `inv db.up`."
        )

    def status(self) -> str:
        return cluster_status(self.cluster.root, self.binaries.major)


def cluster_status(root: Path, wanted: int | None) -> str:
    """One line on the local cluster in `root`: none, stopped or running, and its major version
    (read from its files, so no binaries are needed), with a warning when it is not `wanted`."""
    cluster = Cluster(root, root)
    if not cluster.exists():
        return "local cluster: none yet (`inv db.up` creates it)"
    made_by = cluster.data_major()
    other = (
        f"; made by PostgreSQL {made_by}, not the PostgreSQL {wanted} db.up runs "
        f"({VERSION_SETTING}): `inv db.up` says what to do"
        if made_by is not None and wanted is not None and made_by != wanted
        else ""
    )
    running = cluster.running()
    if running is None:
        return f"local cluster: stopped, PostgreSQL {made_by} data in {cluster.root}{other}"
    return (
        f"local cluster: running PostgreSQL {made_by}, pid {running.pid}, port {running.port}, "
        f"data in {cluster.root}{other}"
    )


def local_cluster_root() -> Path:
    """`UAIP_PGDATA`, else `.pgdata/` in the checkout; as root, a folder `postgres` can reach."""
    configured: Path | None = PGDATA.read()
    if configured is not None:
        return configured
    root = paths.local_cluster_dir()
    if process.server_account() is None:
        # An ordinary account runs the server itself; `Cluster.initialize` creates the folder.
        return root
    created = not root.exists()
    if created:
        root.mkdir(mode=0o700)
        process.give_to_server_account(root)
    if process.server_account_can_use(root):
        return root
    if created:
        root.rmdir()
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return Path("/var/lib/uaip-db") / f"{paths.project_root().name}-{digest}"
