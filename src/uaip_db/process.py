"""Running programs: the one module that starts a child process, and never through a shell.

PostgreSQL's server programs run as the `postgres` user when we are root. Its client programs
(pg_dump, pg_restore, psql) get the password only through the environment, never in argv, and
the files they write are owner-only.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from subprocess import CalledProcessError as CalledProcessError
from subprocess import CompletedProcess as CompletedProcess
from subprocess import Popen as Popen
from subprocess import TimeoutExpired as TimeoutExpired
from typing import IO, TYPE_CHECKING, NoReturn, TypedDict, overload

from uaip_db.errors import BackupError, DiskFull, ServerError, SettingsError, UaipDbError
from uaip_db.pg import child_environment, scrub

if TYPE_CHECKING:
    from uaip_db.settings import DatabaseConfig

SERVER_USER = "postgres"
# What pg_dump and pg_restore print when a disk filled up: their own folder (ENOSPC), or the
# server's (SQLSTATE 53100 reaches them as its message only).
DISK_FULL_MARKS = ("No space left on device", "could not extend file")
OWNER_ONLY_UMASK = 0o077
PR_SET_PDEATHSIG = 1


class _ChildSettings(TypedDict):
    """What `execute` and `start` hand to every child: environment, umask, folder, account."""

    env: dict[str, str] | None
    umask: int
    cwd: str | None
    user: int | None
    group: int | None
    extra_groups: list[int] | None


def running_as_root() -> bool:
    return os.geteuid() == 0


def server_account() -> tuple[int, int] | None:
    """The (uid, gid) server programs must run as, or None when we may run them ourselves."""
    if not running_as_root():
        return None
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise ServerError(
            "PostgreSQL refuses to run as root and there is no 'postgres' user; "
            "create one (useradd --system postgres) or run as an ordinary user."
        ) from None
    return entry.pw_uid, entry.pw_gid


def give_to_server_account(path: Path, *, recursive: bool = True) -> None:
    """Hand a folder we created (and, unless not `recursive`, what is in it) to the account the
    server runs as."""
    account = server_account()
    if account is None:
        return
    uid, gid = account
    if not recursive:
        os.chown(path, uid, gid)
        return
    for folder, _dirs, files in os.walk(path):
        os.chown(folder, uid, gid)
        for name in files:
            os.chown(os.path.join(folder, name), uid, gid)


def is_running(pid: int) -> bool:
    """Whether a process `pid` exists (one of another account's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def server_account_can_use(path: Path) -> bool:
    """Whether the server account can reach and write the folder `path`."""
    test = ["test", "-w", str(path), "-a", "-x", str(path)]
    return execute(test, as_server=True).returncode == 0


# --- starting a program ---------------------------------------------------------------------


def execute(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float | None = None,
    as_server: bool = False,
    umask: int | None = None,
    cwd: str | None = None,
    check: bool = False,
) -> CompletedProcess[str]:
    """Run a program to its end and return what it printed, as text (UTF-8, bad bytes replaced).

    `env` is added to this process's environment; the program reads `input`, else nothing.
    `as_server` runs it as the server account (from `/` unless `cwd` says otherwise). Raises
    OSError when it cannot be started, TimeoutExpired after `timeout` seconds, and
    CalledProcessError when it fails only with `check`.
    """
    return subprocess.run(
        list(args),
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        check=check,
        timeout=timeout,
        **_child_settings(env, as_server, umask, cwd),
    )


@overload
def start(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    as_server: bool = False,
    umask: int | None = None,
    cwd: str | None = None,
    parent_death_signal: signal.Signals | None = None,
    log: None = None,
) -> Popen[str]: ...


@overload
def start(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    as_server: bool = False,
    umask: int | None = None,
    cwd: str | None = None,
    parent_death_signal: signal.Signals | None = None,
    log: IO[bytes],
) -> Popen[bytes]: ...


def start(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    as_server: bool = False,
    umask: int | None = None,
    cwd: str | None = None,
    parent_death_signal: signal.Signals | None = None,
    log: IO[bytes] | None = None,
) -> Popen[str] | Popen[bytes]:
    """Start a program in the background with nothing on its stdin (see `execute` for the rest).

    Its output comes back through pipes as text, or goes to `log` (stdout and stderr both).
    With `parent_death_signal` the kernel sends it that signal when this process dies, so it
    never outlives us (set after the switch to the server account, which would clear it).
    """
    settings = _child_settings(env, as_server, umask, cwd)
    death = _parent_death(parent_death_signal) if parent_death_signal is not None else None
    if log is not None:
        return subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=death,
            **settings,
        )
    return subprocess.Popen(
        list(args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        preexec_fn=death,
        **settings,
    )


def _child_settings(
    env: Mapping[str, str] | None, as_server: bool, umask: int | None, cwd: str | None
) -> _ChildSettings:
    account = server_account() if as_server else None
    return {
        # No child inherits the caller's libpq variables (PGSERVICE, PGHOSTADDR, PGOPTIONS, ...):
        # a client tool connects where its explicit settings say, and nowhere else.
        "env": {**child_environment(), **(env or {})},
        "umask": -1 if umask is None else umask,
        "cwd": "/" if account and cwd is None else cwd,
        "user": account[0] if account else None,
        "group": account[1] if account else None,
        "extra_groups": [] if account else None,
    }


def _parent_death(signum: signal.Signals) -> Callable[[], None]:
    def ask_the_kernel() -> None:  # runs in the child, between fork and exec
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signum)

    return ask_the_kernel


# --- a program that must succeed ------------------------------------------------------------


def run(
    args: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    as_server: bool = False,
    error: type[UaipDbError] = ServerError,
    timeout: float | None = 120,
) -> CompletedProcess[str]:
    """Run a program, raising `error` with its last output line when it fails."""
    try:
        result = execute(args, env=env, as_server=as_server, timeout=timeout)
    except FileNotFoundError:
        raise error(f"Could not {what}: {args[0]} is not installed.") from None
    except PermissionError:
        # A folder on PATH this account may not enter makes a missing program EACCES.
        if os.sep not in args[0] and shutil.which(args[0]) is None:
            raise error(f"Could not {what}: {args[0]} is not installed.") from None
        raise error(
            f"Could not {what}: this account may not run {args[0]} (permission denied)."
        ) from None
    except TimeoutExpired:
        raise error(
            f"Could not {what}: {Path(args[0]).name} did not finish in {timeout} s."
        ) from None
    if result.returncode != 0:
        raise error(f"Could not {what}: {last_line(result.stderr or result.stdout)}")
    return result


def last_line(output: str) -> str:
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


# --- PostgreSQL's client programs -----------------------------------------------------------


def tool(name: str, bindir: Path | None) -> str:
    """pg_dump / pg_restore / psql from `bindir` (the server binaries we would use), else PATH."""
    if bindir is not None and (bindir / name).is_file():
        return str(bindir / name)
    found = shutil.which(name)
    if found is None:
        raise SettingsError(
            f"{name} is not installed; install the PostgreSQL client "
            "(apt-get install postgresql-client) or set PG_BINDIR to its bin folder."
        )
    return found


def tool_version(program: str) -> str:
    result = run_tool([program, "--version"], (), what=f"run {Path(program).name}")
    found = re.search(r"\)\s+(\S+)", result.stdout)
    return found.group(1) if found else result.stdout.strip()


def run_tool(
    args: Sequence[str], configs: Sequence[DatabaseConfig], *, what: str
) -> CompletedProcess[str]:
    """Run a client program with the first config's libpq variables; files it writes are 0600."""
    try:
        result = execute(args, env=_libpq_env(configs), umask=OWNER_ONLY_UMASK)
    except OSError as error:
        raise BackupError(
            f"Could not {what}: {args[0]} cannot be run ({error.strerror})."
        ) from None
    if result.returncode != 0:
        raise tool_error(result.stderr or result.stdout, configs, what=what)
    return result


def start_tool(args: Sequence[str], configs: Sequence[DatabaseConfig]) -> Popen[str]:
    """Start a client program in the background (see run_tool); finish it with finish_tool."""
    try:
        return start(args, env=_libpq_env(configs), umask=OWNER_ONLY_UMASK)
    except OSError as error:
        raise BackupError(f"Could not run {args[0]} ({error.strerror}).") from None


def finish_tool(process: Popen[str], configs: Sequence[DatabaseConfig], *, what: str) -> None:
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise tool_error(stderr or stdout, configs, what=what)


def stop_tool(process: Popen[str]) -> None:
    """Stop a client program whose work is no longer wanted, and wait for it."""
    if process.poll() is None:
        process.terminate()
    process.communicate()


def replace_with_tool(args: Sequence[str], config: DatabaseConfig) -> NoReturn:
    """Become a client program (psql) on `config`'s database, terminal and all; the password
    travels in its environment, never in its arguments."""
    try:
        os.execve(args[0], list(args), child_environment(config))
    except OSError as error:
        raise SettingsError(f"Could not run {args[0]} ({error.strerror}).") from None


def _libpq_env(configs: Sequence[DatabaseConfig]) -> dict[str, str]:
    # pg_dump's and pg_restore's own messages are read by tool_error: in English whatever the
    # caller's locale (LC_ALL=C, as for git), so "server version mismatch" is still found.
    return {**(configs[0].libpq_env() if configs else {}), "LC_ALL": "C"}


def tool_error(output: str, configs: Sequence[DatabaseConfig], *, what: str) -> UaipDbError:
    """One plain line from pg_dump/pg_restore output, with every password scrubbed."""
    for config in configs:
        output = scrub(output, config)
    if "server version mismatch" in output:
        versions = re.search(r"server version: ([^;\s]+); (\w+) version: (\S+)", output)
        detail = (
            f"{versions.group(2)} {versions.group(3)} is older than the server "
            f"({versions.group(1)})"
            if versions
            else "pg_dump is older than the server"
        )
        return SettingsError(
            f"Could not {what}: {detail}. Install a PostgreSQL client that matches the server "
            "(e.g. postgresql-client-16), or set PG_BINDIR to its bin folder."
        )
    if "unsupported version" in output and "file header" in output:
        return SettingsError(
            f"Could not {what}: this pg_restore is older than the pg_dump that wrote the backup. "
            "Install a matching PostgreSQL client, or set PG_BINDIR to its bin folder."
        )
    if any(mark in output for mark in DISK_FULL_MARKS):
        return DiskFull(f"Could not {what}: {meaningful_line(output)}")
    return BackupError(f"Could not {what}: {meaningful_line(output)}")


def meaningful_line(output: str) -> str:
    """The line that says why: the first error (later ones, like a parallel restore's "a worker
    process died unexpectedly", are its consequences), else the last line that is not the
    `Command was:` echo; whitespace collapsed."""
    lines = [" ".join(line.split()) for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line.lower() or "fatal:" in line.lower()]
    if errors:
        # The server's HINT under it says what to change (max_locks_per_transaction, ...).
        after = lines[lines.index(errors[0]) + 1 :][:1]
        hints = [line for line in after if line.startswith("HINT:")]
        return f"{errors[0]} ({hints[0]})" if hints else errors[0]
    rest = [line for line in lines if not line.startswith("Command was:")] or lines
    return rest[-1] if rest else "no output"
