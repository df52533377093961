"""Running scripts/ as CI would: settings in the environment, libpq tools on PATH or PG_BINDIR."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

# The backups' fixtures: a database full of rows, a name to restore into, a role of its own.
from tests.backups.conftest import full_db, full_template, new_target, other_owner  # noqa: F401
from tests.conftest import BIN, ROOT, SETTING_NAMES
from uaip_db.servers.local import find_bindir
from uaip_db.servers.scratch import child_env
from uaip_db.settings import DatabaseConfig

SCRIPTS = ROOT / "scripts"
PROGRAMS = ("wait-for-db", "backup", "ci-migrate")
LIBPQ_TOOLS = ("psql", "pg_dump", "pg_isready")


def run_script(
    name: str,
    *args: str,
    database: DatabaseConfig | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run scripts/NAME with settings for `database` only; the venv's alembic and inv on PATH and
    the PostgreSQL client tools of the servers the tests run (PG_BINDIR)."""
    full_env = {
        k: v for k, v in os.environ.items() if k not in SETTING_NAMES and not k.startswith("PG")
    }
    full_env["PATH"] = f"{BIN}{os.pathsep}{full_env.get('PATH', '')}"
    bindir = find_bindir()
    if bindir is not None:
        full_env["PG_BINDIR"] = str(bindir)
    if database is not None:
        full_env.update(child_env(database))
    full_env.update(env or {})
    return subprocess.run(
        [str(SCRIPTS / name), *args],
        cwd=ROOT,
        env=full_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def logging_bindir(tmp_path: Path) -> tuple[Path, Path]:
    """A PG_BINDIR whose psql, pg_dump and pg_isready log their arguments, then run the real
    tool: (the folder, the log)."""
    real = find_bindir()
    folder, log = tmp_path / "logging-bin", tmp_path / "argv.log"
    folder.mkdir()
    for tool in LIBPQ_TOOLS:
        target = real / tool if real is not None and (real / tool).is_file() else Path(tool)
        wrapper = folder / tool
        wrapper.write_text(
            f'#!/bin/sh\nprintf "%s\\n" "{tool} $*" >>"{log}"\nexec "{target}" "$@"\n'
        )
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return folder, log
