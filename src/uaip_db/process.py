"""Running PostgreSQL's own programs: as the `postgres` user when we are root, never via a shell."""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from uaip_db.errors import ServerError, UaipDbError

SERVER_USER = "postgres"


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


def give_to_server_account(path: Path) -> None:
    """Hand a folder we created to the account the server runs as."""
    account = server_account()
    if account is None:
        return
    uid, gid = account
    for folder, _dirs, files in os.walk(path):
        os.chown(folder, uid, gid)
        for name in files:
            os.chown(os.path.join(folder, name), uid, gid)


def server_account_can_use(path: Path) -> bool:
    """Whether the server account can reach and write the folder `path`."""
    account = server_account()
    if account is None:
        return True
    result = subprocess.run(
        ["test", "-w", str(path), "-a", "-x", str(path)],
        user=account[0],
        group=account[1],
        extra_groups=[],
        check=False,
    )
    return result.returncode == 0


def run(
    args: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    as_server: bool = False,
    error: type[UaipDbError] = ServerError,
    timeout: float | None = 120,
) -> subprocess.CompletedProcess[str]:
    """Run a program, raising `error` with its last output line when it fails."""
    account = server_account() if as_server else None
    full_env = {**os.environ, **(env or {})}
    try:
        result = subprocess.run(
            list(args),
            env=full_env,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            user=account[0] if account else None,
            group=account[1] if account else None,
            extra_groups=[] if account else None,
            cwd="/" if account else None,
        )
    except FileNotFoundError:
        raise error(f"Could not {what}: {args[0]} is not installed.") from None
    except subprocess.TimeoutExpired:
        raise error(
            f"Could not {what}: {Path(args[0]).name} did not finish in {timeout} s."
        ) from None
    if result.returncode != 0:
        raise error(f"Could not {what}: {last_line(result.stderr or result.stdout)}")
    return result


def last_line(output: str) -> str:
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
