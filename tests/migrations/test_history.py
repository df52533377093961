"""The cached script index: right facts, rebuilt whenever a script changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import CHAIN, COMMENTS, HEAD, run_inv, write_revision
from uaip_db.migrations import history
from uaip_db.settings import DatabaseConfig


def test_the_index_matches_alembic(checkout: Path) -> None:
    index = history.load()
    assert [r.revision for r in index.order] == CHAIN
    assert index.heads == [HEAD] == sorted(history.script_directory().get_heads())
    assert index.problems == []
    assert index.describe(COMMENTS).startswith(f"{COMMENTS} (Describe every table")
    assert [r.revision for r in index.pending(["8f2b6c1d4e7a"])] == CHAIN[2:]
    assert index.pending([]) == index.order
    assert history.cache_path().is_file()


def test_a_cached_index_is_reused_and_an_edit_rebuilds_it(checkout: Path) -> None:
    first = history.load()
    cache = history.cache_path()
    stamp = cache.stat().st_mtime_ns
    assert history.load() == first
    assert cache.stat().st_mtime_ns == stamp
    write_revision(checkout / "migrations" / "versions", "5c0000000001", HEAD, ["SELECT 1"], [])
    rebuilt = history.load()
    assert rebuilt.heads == ["5c0000000001"]
    assert any(
        "5c0000000001" in problem and "does nothing" in problem for problem in rebuilt.problems
    )


def test_a_stale_cache_file_is_ignored(checkout: Path) -> None:
    history.load()
    history.cache_path().write_text('{"format": 1, "digest": "bogus"}')
    assert [r.revision for r in history.load().order] == CHAIN


BROKEN = {
    "syntax": ('op.execute("SELECT 1"', "is not valid Python"),
    "import": ("import nosuchmodule", "cannot be loaded (ModuleNotFoundError"),
}


@pytest.mark.parametrize("task", ["db.history", "db.check", "db.lint", "db.upgrade", "db.verify"])
@pytest.mark.parametrize("kind", ["syntax", "import", "down_revision", "duplicate"])
def test_a_revision_file_that_cannot_load_is_one_line(
    checkout: Path, empty_db: DatabaseConfig, task: str, kind: str
) -> None:
    versions = checkout / "migrations" / "versions"
    if kind == "duplicate":
        original = next(versions.glob(f"*{HEAD}*.py"))
        (versions / "zz_copy.py").write_text(original.read_text())
        expected = f"Revision id {HEAD} is used by two files"
    elif kind == "down_revision":
        write_revision(versions, "b0b0b0000001", "ffffffffffff", ["SELECT 1"], ["SELECT 1"])
        expected = "names down_revision 'ffffffffffff', which no revision file has"
    else:
        line, expected = BROKEN[kind]
        path = write_revision(versions, "b0b0b0000001", HEAD, ["SELECT 1"], ["SELECT 1"])
        path.write_text(
            path.read_text().replace("from alembic import op", f"from alembic import op\n{line}")
        )
    result = run_inv(task, database=empty_db, env={"UAIP_DB_ROOT": str(checkout)})
    assert result.returncode == 1, result.stdout
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
