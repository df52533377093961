"""Helpers for the release tests: git and psql as a person runs them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from uaip_db import process
from uaip_db.servers.local import find_bindir
from uaip_db.settings import DatabaseConfig


def git(root: Path, *args: str) -> str:
    """Run git in `root` (a scratch checkout), as a developer would; its output."""
    return subprocess.run(
        ["git", "-c", "user.name=Release Tester", "-c", "user.email=rt@example.org", *args],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def psql_file(database: DatabaseConfig, text: str) -> subprocess.CompletedProcess[str]:
    """Run SQL as a person would run a printed file: psql, stopping at the first error."""
    psql = process.tool("psql", find_bindir())
    return subprocess.run(
        [psql, "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "-f", "-"],
        input=text,
        env={**os.environ, **database.libpq_env()},
        capture_output=True,
        text=True,
        timeout=60,
    )
