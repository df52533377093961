"""What code is being released: the git commit of the checkout, and whether it is exactly that.

A release is the migration scripts, the library that runs them and the baseline, as committed.
Modified or untracked files under migrations/, src/ or database/ mean the release is not the
commit it names; a revision file git does not track (untracked or ignored) would be applied
without ever having been reviewed. Either fails the item, naming the files. git runs through
`uaip_db.process`, in the project root, and never takes optional locks (another git may be busy
in the same checkout).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from uaip_db import process
from uaip_db.migrations import history

WATCHED = ("migrations", "src", "database")
GIT_SECONDS = 60


@dataclass(frozen=True)
class SourceState:
    root: str
    commit: str | None = None
    branch: str | None = None
    changed: list[str] = field(default_factory=list)  # `git status --porcelain` lines
    untracked_revisions: list[str] = field(default_factory=list)  # relative to the root
    problem: str | None = None  # why git could not tell

    @property
    def clean(self) -> bool:
        return self.problem is None and not self.changed and not self.untracked_revisions

    def label(self) -> str:
        """One line: `commit 1a2b3c4d5e6f on main, clean` or why not."""
        if self.problem is not None:
            return f"unknown: {self.problem}"
        where = f"commit `{self.commit}`" + (f" on `{self.branch}`" if self.branch else "")
        if self.clean:
            return f"{where}, clean"
        dirty = len(set(self.changed_paths()) | set(self.untracked_revisions))
        return f"{where} plus {dirty} uncommitted file(s)"

    def changed_paths(self) -> list[str]:
        return [line[3:] for line in self.changed]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "clean": self.clean}


def source_state(root: Path, index: history.ScriptIndex) -> SourceState:
    """The checkout at `root`: its commit, branch, uncommitted files and untracked revisions."""
    head = _git(root, "rev-parse", "--verify", "HEAD")
    if isinstance(head, str):
        return SourceState(str(root), problem=head)
    commit = head.stdout.strip()
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
    status = _git(root, "status", "--porcelain=v1", "--untracked-files=all", "--", *WATCHED)
    if isinstance(status, str):
        return SourceState(str(root), commit, problem=status)
    tracked = _git(root, "ls-files", "-z", "--", "migrations")
    if isinstance(tracked, str):
        return SourceState(str(root), commit, problem=tracked)
    known = set(tracked.stdout.split("\0"))
    untracked = sorted(
        relative for item in index.order if (relative := _relative(item.path, root)) not in known
    )
    return SourceState(
        str(root),
        commit,
        None if isinstance(branch, str) else _branch(branch.stdout.strip()),
        [line for line in status.stdout.splitlines() if line.strip()],
        untracked,
    )


def _branch(name: str) -> str | None:
    return None if name in ("", "HEAD") else name  # HEAD: a detached checkout


def _relative(path: str, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _git(root: Path, *args: str) -> process.CompletedProcess[str] | str:
    """git's answer, or why there is none (a sentence)."""
    try:
        result = process.execute(
            ["git", *args],
            cwd=str(root),
            env={"GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
            timeout=GIT_SECONDS,
        )
    except FileNotFoundError:
        return "git is not installed, so the commit cannot be named"
    except OSError as error:
        return f"git cannot be run in {root} ({error.strerror})"
    except process.TimeoutExpired:
        return f"git did not answer in {GIT_SECONDS} s"
    if result.returncode == 0:
        return result
    said = process.meaningful_line(result.stderr or result.stdout)
    if "not a git repository" in said:
        return f"{root} is not a git checkout, so the code released is not a known commit"
    if args[0] == "rev-parse" and "Needed a single revision" in said:
        return f"the git repository at {root} has no commit yet"
    return f"`git {args[0]}` failed in {root}: {said}"
