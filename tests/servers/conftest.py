"""Fixtures for the server tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder the `postgres` account can reach (pytest's tmp_path is private to root), in the
    temporary folder (tests/conftest.py chooses it)."""
    folder = Path(tempfile.mkdtemp(prefix="uaip-test-shared-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
