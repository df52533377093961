"""What code is released: the commit, and whether the checkout is exactly that (real git)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import HEAD, write_revision
from tests.release.conftest import git
from uaip_db.migrations import history
from uaip_db.release.items import code_item
from uaip_db.release.source import source_state


def test_a_clean_checkout_names_its_commit_and_branch(repo: Path) -> None:
    state = source_state(repo, history.load())
    assert state.commit == git(repo, "rev-parse", "HEAD").strip()
    assert state.branch == "main"
    assert state.clean and state.changed == [] and state.untracked_revisions == []
    item = code_item(state)
    assert item.status == "PASS"
    assert f"- Commit: `{state.commit}` (branch `main`)" in item.body


def test_modified_and_untracked_files_fail_the_item_and_are_named(repo: Path) -> None:
    (repo / "migrations" / "lint-exceptions.toml").open("a").write("\n# edited\n")
    (repo / "database" / "extra.sql").write_text("SELECT 1;\n")
    (repo / "notes.txt").write_text("outside migrations/, src/ and database/\n")
    revision = write_revision(repo / "migrations" / "versions", "cc0000000001", HEAD, [], [])
    state = source_state(repo, history.load())
    assert not state.clean
    assert sorted(state.changed) == [
        " M migrations/lint-exceptions.toml",
        "?? database/extra.sql",
        f"?? migrations/versions/{revision.name}",
    ]
    assert state.untracked_revisions == [f"migrations/versions/{revision.name}"]
    item = code_item(state)
    assert item.status == "FAIL"
    assert item.brief == "3 uncommitted file(s)"
    assert f"    - `migrations/versions/{revision.name}`" in item.body
    assert "notes.txt" not in "\n".join(item.body)


def test_an_ignored_revision_file_is_still_named(repo: Path) -> None:
    """git status hides ignored files; a revision file git does not track fails all the same."""
    (repo / ".git" / "info" / "exclude").write_text("*_test.py\n")
    revision = write_revision(repo / "migrations" / "versions", "cc0000000002", HEAD, [], [])
    state = source_state(repo, history.load())
    assert state.changed == []
    assert state.untracked_revisions == [f"migrations/versions/{revision.name}"]
    assert code_item(state).status == "FAIL"


def test_a_detached_checkout_has_a_commit_and_no_branch(repo: Path) -> None:
    git(repo, "checkout", "-q", "--detach")
    state = source_state(repo, history.load())
    assert state.branch is None and state.clean and state.commit


def test_not_a_git_checkout_says_so_and_fails(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(checkout.parent))  # whatever holds tmp
    state = source_state(checkout, history.load())
    assert state.commit is None
    assert (
        state.problem
        == f"{checkout} is not a git checkout, so the code released is not a known commit"
    )
    item = code_item(state)
    assert item.status == "FAIL" and "is not a git checkout" in item.body[0]


def test_a_repository_without_a_commit_says_so(checkout: Path) -> None:
    git(checkout, "init", "-q")
    state = source_state(checkout, history.load())
    assert state.problem == f"the git repository at {checkout} has no commit yet"
