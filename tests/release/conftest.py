"""Helpers for the release tests: git and psql as a person runs them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
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


def commit_all(root: Path, message: str = "Release candidate") -> str:
    """Make `root` a git checkout (the repository's .gitignore) with everything in it
    committed; the commit's id."""
    if not (root / ".git").exists():
        shutil.copy(ROOT / ".gitignore", root / ".gitignore")
        git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD").strip()


@pytest.fixture
def repo(checkout: Path) -> Path:
    """The scratch checkout as a git repository with everything committed: a clean release."""
    commit_all(checkout)
    return checkout


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
