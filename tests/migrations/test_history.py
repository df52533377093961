"""The cached script index: right facts, rebuilt whenever a script changes."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import CHAIN, COMMENTS, HEAD, write_revision
from uaip_db.migrations import history


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
