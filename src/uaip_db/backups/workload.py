"""The application's write load on a rehearsal copy: pgbench with the application's statements.

The statements live in workload/ (paths.workload_dir), kept by the application's owners:
`setup.sql` runs once, every other `*.sql` is a pgbench script, run at a steady total rate
(`pgbench -R`), each client on a session of its own. A statement that fails on the upgraded
copy is reported by its file: the running application would break there. pgbench runs through
`process.start` with the copy's libpq settings in its environment (the password never in argv)
and logs every transaction (`--log`): when it ended, how long it took, which script it ran. It
runs until stopped: SIGALRM is the signal pgbench's own `-T` timer sends itself, so it finishes
the transactions in flight, writes its logs and its summary, and exits.
"""

from __future__ import annotations

import re
import signal
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uaip_db import paths, process
from uaip_db.errors import BackupError, SettingsError
from uaip_db.pg import connection, scrub
from uaip_db.servers.binaries import client_program
from uaip_db.settings import MAX_WRITER_WAIT, DatabaseConfig

APPLICATION_NAME = "uaip-db-load"
SETUP_FILE = "setup.sql"  # run once before the writers; %(clients)s is their number
ABORTED = re.compile(
    r"client (\d+) (?:script (\d+) )?aborted in command \d+ (?:query \d+)?:?\s*(.*)"
)
STOP_SECONDS = 60  # how long a stopped pgbench may take to finish its transactions
START_SECONDS = 30
WRITING = (
    "SELECT count(*) > 0 FROM pg_stat_activity "
    "WHERE datname = current_database() AND application_name = %s AND query <> ''"
)


@dataclass(frozen=True)
class LoadSettings:
    """How hard the writers write (`rate` transactions per second in all, over `clients`), how
    long they are measured before the upgrade, and the longest a writer may wait behind it."""

    clients: int = 4
    rate: int = 100
    before_seconds: float = 3.0
    max_writer_wait: float = MAX_WRITER_WAIT.default

    def line(self) -> str:
        return (
            f"{self.clients} writers, {self.rate} transactions/s in all, measured "
            f"{self.before_seconds:g} s before the upgrade; budget: no writer waits more than "
            f"{self.max_writer_wait:g} s"
        )


@dataclass(frozen=True)
class Transaction:
    table: str
    ended: float  # wall clock (time.time())
    seconds: float | None  # None: it failed

    @property
    def started(self) -> float:
        return self.ended - (self.seconds or 0.0)


@dataclass(frozen=True)
class Latencies:
    transactions: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    @classmethod
    def of(cls, transactions: list[Transaction]) -> Latencies:
        times = sorted(t.seconds * 1000 for t in transactions if t.seconds is not None)
        if not times:
            return cls(len(transactions), None, None, None)
        return cls(
            len(transactions),
            round(_percentile(times, 50), 3),
            round(_percentile(times, 99), 3),
            round(times[-1], 3),
        )

    def line(self) -> str:
        if self.p50_ms is None:
            return f"{self.transactions} transaction(s), none completed"
        return (
            f"{self.transactions} transaction(s), p50 {self.p50_ms:.1f} ms, "
            f"p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "transactions": self.transactions,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
        }


def _percentile(ordered: list[float], percent: int) -> float:
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[percent - 1]


@dataclass(frozen=True)
class WorkloadResult:
    transactions: list[Transaction]
    aborted: dict[int, str]  # client -> the error that stopped it
    failed: int  # transactions pgbench counted as failed (serialization, deadlock)
    argv: list[str] = field(default_factory=list)  # what pgbench was started with

    @property
    def errors(self) -> int:
        return len(self.aborted) + self.failed


def application_scripts(folder: Path | None = None) -> list[Path]:
    """The application's pgbench scripts in workload/ (every `*.sql` but setup.sql), by name."""
    folder = folder or paths.workload_dir()
    scripts = sorted(path for path in folder.glob("*.sql") if path.name != SETUP_FILE)
    if not scripts:
        raise SettingsError(
            f"{folder} holds none of the application's statements (pgbench scripts, *.sql), so "
            "no writers can run; restore workload/ (workload/README.md), or rehearse without "
            "writers (db.rehearse without --load, release.check --no-load)."
        )
    return scripts


def shown(path: Path) -> str:
    """A workload file as people know it: workload/NAME.sql."""
    return f"{path.parent.name}/{path.name}"


def pgbench(config: DatabaseConfig) -> str:
    """pgbench beside the server binaries we use (servers.binaries), else on PATH."""

    try:
        return client_program("pgbench")
    except SettingsError:
        raise SettingsError(
            "pgbench is not installed, so writers cannot be simulated; install the PostgreSQL "
            "client (it ships pgbench) or set PG_BINDIR to its bin folder; or rehearse without "
            "writers (db.rehearse without --load, release.check --no-load)."
        ) from None


class Workload:
    """pgbench writing to `target` until `stop()`; the scripts and logs live in `folder`."""

    def __init__(self, target: DatabaseConfig, folder: Path, settings: LoadSettings) -> None:
        self.target = target
        self.folder = folder
        self.settings = settings
        self._process: process.Popen[str] | None = None
        self.argv: list[str] = []
        self.scripts: list[Path] = []

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        self.scripts = application_scripts()
        self._setup()
        scripts = []
        for path in self.scripts:
            scripts += ["-f", f"{path}@1"]
        self.argv = [
            pgbench(self.target),
            "--no-vacuum",
            f"--client={self.settings.clients}",
            "--jobs=1",
            f"--rate={self.settings.rate}",
            "--time=86400",  # until stopped
            "--log",
            f"--log-prefix={self.folder / 'transactions'}",
            *scripts,
        ]
        env = {**self.target.libpq_env(), "PGAPPNAME": APPLICATION_NAME}
        try:
            self._process = process.start(self.argv, env=env, cwd=str(self.folder))
        except OSError as error:
            raise BackupError(f"Could not run pgbench ({error.strerror}).") from None
        self._wait_until_writing()

    def _wait_until_writing(self) -> None:
        """Until a writer has run a statement: pgbench then has its clients and its timer, so
        SIGALRM ends it cleanly (before that, the signal would simply kill it)."""
        deadline = time.monotonic() + START_SECONDS
        with connection(self.target) as conn:
            while time.monotonic() < deadline:
                if self._process is None or self._process.poll() is not None:
                    return  # it ended already; stop() reads why
                row = conn.execute(WRITING, (APPLICATION_NAME,)).fetchone()
                if row and row[0]:
                    return
                time.sleep(0.02)
        self.kill()
        raise BackupError(f"pgbench did not start writing within {START_SECONDS} s.")

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> WorkloadResult:
        """Ask pgbench to finish (as its own timer would) and read what it logged."""
        child = self._process
        if child is None:
            return WorkloadResult([], {}, 0, self.argv)
        if child.poll() is None:
            child.send_signal(signal.SIGALRM)
        try:
            stdout, stderr = child.communicate(timeout=STOP_SECONDS)
        except process.TimeoutExpired:
            child.kill()
            stdout, stderr = child.communicate()
        self._process = None
        stderr = scrub(stderr, self.target)
        if child.returncode not in (0, 2) or "number of transactions" not in stdout:
            raise BackupError(f"pgbench failed: {process.meaningful_line(stderr or stdout)}")
        return WorkloadResult(
            self._read_logs(),
            aborted_clients(stderr, self.scripts),
            failed_transactions(stdout),
            self.argv,
        )

    def kill(self) -> None:
        """Stop pgbench without reading anything (the rehearsal failed on its way)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.communicate()
        self._process = None

    def _setup(self) -> None:
        """workload/setup.sql, once, before the writers (when there is one)."""
        broke = setup_failure(self.target, self.settings.clients)
        if broke is not None:
            raise BackupError(
                f"The application's {broke.script} failed on the copy: {broke.error}; the "
                "running application would break there too: fix the workload, or deploy the "
                "application that stops using it first."
            )

    def _read_logs(self) -> list[Transaction]:
        names = [path.stem for path in self.scripts]
        found: list[Transaction] = []
        for path in sorted(self.folder.glob("transactions.*")):
            for line in path.read_text(encoding="utf-8").splitlines():
                found += parse_log_line(line, names)
        return sorted(found, key=lambda t: t.ended)


def parse_log_line(line: str, names: list[str]) -> list[Transaction]:
    """`client_id transaction_no time script_no time_epoch time_us [schedule_lag]`; `time` is
    microseconds, or `failed`/`serialization`/`deadlock`, or `skipped` (never started)."""
    fields = line.split()
    if len(fields) < 6 or fields[2] == "skipped":
        return []
    script, epoch, micros = int(fields[3]), int(fields[4]), int(fields[5])
    seconds = int(fields[2]) / 1e6 if fields[2].isdigit() else None
    table = names[script] if script < len(names) else f"script {script}"
    return [Transaction(table, epoch + micros / 1e6, seconds)]


def aborted_clients(stderr: str, scripts: list[Path]) -> dict[int, str]:
    """Per client that pgbench stopped: which of the application's statements failed, and how."""
    found: dict[int, str] = {}
    for line in stderr.splitlines():
        match = ABORTED.search(line)
        if not match:
            continue
        number = int(match.group(2)) if match.group(2) is not None else 0
        why = " ".join(match.group(3).split())
        where = shown(scripts[number]) if number < len(scripts) else "a workload script"
        found.setdefault(
            int(match.group(1)),
            f"the application's statement in {where} failed: {why}",
        )
    return found


def failed_transactions(stdout: str) -> int:
    match = re.search(r"number of failed transactions: (\d+)", stdout)
    return int(match.group(1)) if match else 0


@dataclass(frozen=True)
class Breakage:
    """One of the application's statements that fails on a database: where, what, why."""

    script: str  # workload/NAME.sql
    statement: str  # the statement as the script has it, on one line
    error: str

    def line(self) -> str:
        return f"`{self.statement}` ({self.script}) fails: {self.error}"


def server_said(error: Exception) -> str:
    """The server's own sentence for a failed statement (not psycopg's `LINE 1: ... ^` echo)."""
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None)
    return str(primary) if primary else process.meaningful_line(str(error))


def commands(text: str) -> list[str]:
    """A pgbench script's commands in pgbench's numbering: each backslash line is one, each SQL
    statement (up to its `;`) another; comments and blank lines are none."""
    found: list[str] = []
    sql: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not sql and (not line or line.startswith("--")):
            continue
        if not sql and line.startswith("\\"):
            found.append(line)
            continue
        sql.append(line)
        if line.endswith(";"):
            found.append(" ".join(" ".join(sql).split()))
            sql = []
    if sql:
        found.append(" ".join(" ".join(sql).split()))
    return found


COMMAND = re.compile(r"aborted in command (\d+)")


def setup_failure(target: DatabaseConfig, clients: int) -> Breakage | None:
    """Run workload/setup.sql (when there is one) for `clients` writers; how it failed, if it
    did."""
    import psycopg  # noqa: PLC0415

    setup = paths.workload_dir() / SETUP_FILE
    if not setup.is_file():
        return None
    text = setup.read_text(encoding="utf-8")
    with connection(target) as conn:
        try:
            conn.execute(text, {"clients": clients})
        except psycopg.Error as error:
            ran = text.replace("%(clients)s", str(clients))
            return Breakage(shown(setup), " ".join(commands(ran)), server_said(error))
    return None


def probe(target: DatabaseConfig) -> list[Breakage]:
    """Run the application's statements once on `target` (setup.sql, then one transaction of each
    script, one client): the ones that fail, and why. Nothing fails: the application, as
    workload/ says it runs today, works on this schema."""
    broke = setup_failure(target, 1)
    if broke is not None:
        return [broke]
    broken: list[Breakage] = []
    env = {**target.libpq_env(), "PGAPPNAME": APPLICATION_NAME}
    for script in application_scripts():
        argv = [pgbench(target), "--no-vacuum", "--client=1", "--transactions=1", "-f", str(script)]
        try:
            done = process.execute(argv, env=env, timeout=STOP_SECONDS)
        except (OSError, process.TimeoutExpired) as error:
            raise BackupError(f"Could not run pgbench ({error}).") from None
        stderr = scrub(done.stderr, target)
        aborted = ABORTED.search(stderr)
        if aborted is None and done.returncode == 0:
            continue
        why = " ".join(aborted.group(3).split()) if aborted else process.meaningful_line(stderr)
        number = COMMAND.search(stderr)
        listed = commands(script.read_text(encoding="utf-8"))
        statement = (
            listed[int(number.group(1))]
            if number and int(number.group(1)) < len(listed)
            else "a statement"
        )
        broken.append(Breakage(shown(script), statement, why))
    return broken
