"""What the migration scripts say (revisions, order, heads, docs, problems), cached by content.

Loading the scripts through Alembic costs most of a second (SQLAlchemy and Alembic imports, every
revision module executed). `db.upgrade` on a database already at head and `db.check` only need
the facts, so they are kept in `migrations/versions/__pycache__/uaip-scripts.json`, keyed by a
hash of the scripts' contents: any edit, new or removed file rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from uaip_db import paths
from uaip_db.errors import CheckFailed

CACHE_NAME = "uaip-scripts.json"
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Revision:
    revision: str
    down_revisions: list[str]
    doc: str
    path: str


@dataclass(frozen=True)
class ScriptIndex:
    digest: str
    order: list[Revision]  # base first
    heads: list[str]
    problems: list[str]

    def get(self, revision: str) -> Revision | None:
        for item in self.order:
            if item.revision == revision:
                return item
        return None

    def describe(self, revision: str) -> str:
        item = self.get(revision)
        return f"{revision} ({item.doc})" if item else f"{revision} (unknown to these scripts)"

    def ancestors(self, revisions: list[str] | tuple[str, ...]) -> set[str]:
        """The revisions given and every revision below them."""
        by_id = {item.revision: item for item in self.order}
        seen: set[str] = set()
        stack = list(revisions)
        while stack:
            revision = stack.pop()
            if revision in seen or revision not in by_id:
                continue
            seen.add(revision)
            stack.extend(by_id[revision].down_revisions)
        return seen

    def pending(self, current: list[str] | tuple[str, ...]) -> list[Revision]:
        applied = self.ancestors(current)
        return [item for item in self.order if item.revision not in applied]


def unknown_revision(revision: str) -> CheckFailed:
    """The database records a revision these scripts do not have."""
    return CheckFailed(
        f"The database is at revision {revision}, which these migration scripts do not "
        "know; update your checkout, or check DB_NAME."
    )


def scripts_digest(versions: Path | None = None) -> str:
    versions = versions or paths.versions_dir()
    digest = hashlib.sha256()
    for path in sorted(versions.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cache_path() -> Path:
    return paths.versions_dir() / "__pycache__" / CACHE_NAME


def load() -> ScriptIndex:
    """The index for the scripts as they are now: from the cache, else built and cached."""
    digest = scripts_digest()
    cached = _read_cache(digest)
    if cached is not None:
        return cached
    index = build(digest)
    _write_cache(index)
    return index


def build(digest: str) -> ScriptIndex:
    from uaip_db.checks.status import script_problems
    from uaip_db.migrations import runner

    scripts = runner.script_directory()
    walked = list(reversed(list(scripts.walk_revisions())))
    order = [
        Revision(
            s.revision,
            list(s.down_revision)
            if isinstance(s.down_revision, tuple | list)
            else [s.down_revision]
            if s.down_revision
            else [],
            s.doc,
            str(s.path),
        )
        for s in walked
    ]
    return ScriptIndex(digest, order, sorted(scripts.get_heads()), script_problems(scripts))


def _read_cache(digest: str) -> ScriptIndex | None:
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("format") != CACHE_FORMAT or data.get("digest") != digest:
        return None
    order = [Revision(**item) for item in data["order"]]
    if any(not Path(item.path).is_file() for item in order):
        return None
    return ScriptIndex(digest, order, data["heads"], data["problems"])


def _write_cache(index: ScriptIndex) -> None:
    path = cache_path()
    try:
        path.parent.mkdir(exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        payload = json.dumps({"format": CACHE_FORMAT, **asdict(index)})
        temporary.write_text(payload, encoding="utf-8")
        temporary.replace(path)
    except OSError:
        pass  # a read-only checkout still works, only slower
