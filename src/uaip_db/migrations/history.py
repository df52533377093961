"""THE revision graph: what the migration scripts say, in order, with their markers, cached.

Loading the scripts through Alembic costs most of a second (SQLAlchemy and Alembic imports, every
revision module executed). `db.upgrade` on a database already at head and `db.check` only need
the facts, so they are kept in `migrations/versions/__pycache__/uaip-scripts.json`, keyed by a
hash of the scripts' contents: any edit, new or removed file rebuilds it.

Markers are module-level assignments in a revision, read from its source (never by importing it):
- `destroys_data = "why"`: the upgrade drops data, and why that is acceptable.
- `destroys_data_on_downgrade = "sessions.email"`: the author says the downgrade drops data.
- `irreversible = "why"`: the downgrade deliberately does nothing or refuses.
- `phase = "expand"` (the previous release of the application keeps working on the schema it
  leaves) or `phase = "contract"` (only once every instance runs the new release): see
  migrations/phases.py; an unmarked revision is judged from its schema change.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from uaip_db import paths
from uaip_db.catalog.expected import BASE
from uaip_db.errors import CheckFailed, UsageError

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

CACHE_NAME = "uaip-scripts.json"
CACHE_FORMAT = 3


@dataclass(frozen=True)
class Revision:
    revision: str
    down_revisions: list[str]
    doc: str
    path: str
    destroys_data: str | None = None
    destroys_data_on_downgrade: str | None = None
    irreversible: str | None = None
    downgrade_is_empty: bool = False
    phase: str | None = None  # as the revision declares it; phases.phase_of judges unmarked ones

    @property
    def is_merge(self) -> bool:
        return len(self.down_revisions) > 1

    @property
    def parent(self) -> str:
        """The one revision below (`base` for the first); a merge has no one parent."""
        if self.is_merge:
            raise UsageError(f"Revision {self.revision} is a merge: it has no single parent.")
        return self.down_revisions[0] if self.down_revisions else BASE

    @property
    def downgrade_missing(self) -> bool:
        """downgrade() does nothing, and neither says why (`irreversible`) nor is a merge (whose
        downgrade only splits the heads again)."""
        return self.downgrade_is_empty and not self.irreversible and not self.is_merge


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

    def describe_current(self, current: tuple[str, ...] | list[str]) -> str:
        if not current:
            return "base (no migrations applied)"
        return ", ".join(
            self.describe(revision) + (" [head]" if revision in self.heads else "")
            for revision in current
        )

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

    def as_of(self, revision: str) -> ScriptIndex:
        """The scripts as the release at `revision` shipped them: that revision and every one
        below it (committed revision files never change, so this is that release's own copy)."""
        kept = self.ancestors([revision])
        return ScriptIndex(
            f"{self.digest}@{revision}",
            [item for item in self.order if item.revision in kept],
            [revision],
            [],
        )

    def pending(self, current: list[str] | tuple[str, ...]) -> list[Revision]:
        applied = self.ancestors(current)
        return [item for item in self.order if item.revision not in applied]

    def is_at_head(self, current: list[str] | tuple[str, ...]) -> bool:
        return bool(current) and sorted(current) == self.heads

    def single_head(self) -> str:
        """The one head, or a failure saying the scripts must be merged first."""
        if len(self.heads) != 1:
            raise CheckFailed(several_heads(self.heads))
        return self.heads[0]

    def resolve(self, name: str) -> str:
        """`base`, `head`, a revision id or a unique prefix of one, as a full revision id."""
        if name == BASE:
            return BASE
        if name == "head":
            if len(self.heads) != 1:
                raise UsageError("The scripts have several heads; name the revision.")
            return self.heads[0]
        if self.get(name) is not None:
            return name
        matches = [item.revision for item in self.order if name and item.revision.startswith(name)]
        if len(matches) != 1:
            raise UsageError(f"Unknown revision {name!r}; `inv db.history` lists them.")
        return matches[0]

    def downgrade_plan(self, current: tuple[str, ...], target: str) -> DowngradePlan:
        """What a downgrade from `current` to `target` reverts (newest first), and where it ends.

        Alembic reverts every applied revision that is not an ancestor of the target, so across
        a merge the plan holds the revisions of every branch, not one chain.
        """
        if not current:
            raise UsageError("The database is at base already; there is nothing to downgrade.")
        if len(current) > 1:
            raise UsageError(
                "The database has several heads applied; downgrade with an explicit --rev."
            )
        if self.get(current[0]) is None:
            raise unknown_revision(current[0])
        applied = self.ancestors(current)
        if target == BASE:
            ends = BASE
        elif target.startswith("-") and target[1:].isdigit():
            ends = self._steps_down(current[0], int(target[1:]), len(applied))
        else:
            try:
                ends = self.resolve(target)
            except UsageError:
                raise UsageError(
                    f"Unknown revision {target!r}; `inv db.history` lists them."
                ) from None
            if ends not in applied or ends == current[0]:
                raise UsageError(
                    f"{target} is not below the current revision {current[0]}; "
                    "nothing to downgrade."
                )
        kept = self.ancestors([ends]) if ends != BASE else set()
        reverted = [item for item in reversed(self.order) if item.revision in applied - kept]
        return DowngradePlan(reverted, ends)

    def _steps_down(self, head: str, steps: int, applied: int) -> str:
        """The revision `steps` single steps below `head` (a merge has no single step)."""
        if steps > applied:
            raise UsageError(
                f"Cannot go down {steps} revision(s): only {applied} are applied. "
                "`inv db.current` shows where you are."
            )
        at = head
        for _ in range(steps):
            item = self.get(at)
            assert item is not None
            if len(item.down_revisions) > 1:
                raise UsageError(
                    f"-{steps} would step through the merge revision {at}, which has "
                    f"{len(item.down_revisions)} parents; name the target: --rev REVISION."
                )
            at = item.down_revisions[0] if item.down_revisions else BASE
        return at


@dataclass(frozen=True)
class DowngradePlan:
    reverted: list[Revision]  # newest first
    target: str  # the revision the database ends at, or "base"


def several_heads(heads: list[str]) -> str:
    return (
        f"The migration scripts have {len(heads)} heads ({', '.join(sorted(heads))}); "
        'join them with `alembic merge heads -m "merge"`.'
    )


def unknown_revision(revision: str) -> CheckFailed:
    """The database records a revision these scripts do not have."""
    return CheckFailed(
        f"The database is at revision {revision}, which these migration scripts do not "
        "know; update your checkout, or check DB_NAME."
    )


def script_directory() -> ScriptDirectory:
    """The scripts as Alembic loads them (imports every revision module)."""
    from alembic.config import Config  # noqa: PLC0415
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    config = Config(str(paths.alembic_ini()))
    config.set_main_option("script_location", str(paths.migrations_dir()))
    return ScriptDirectory.from_config(config)


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
    duplicated = duplicate_ids(paths.versions_dir())
    if duplicated:
        raise CheckFailed(duplicated)
    try:
        with warnings.catch_warnings():  # Alembic warns before it fails; the failure says it all
            warnings.simplefilter("ignore")
            index = build(digest, script_directory())
    except Exception as error:
        raise CheckFailed(unloadable(error)) from None
    _write_cache(index)
    return index


def unloadable(error: Exception) -> str:
    """One line saying which revision file cannot be loaded, and why."""
    versions = paths.versions_dir()
    if isinstance(error, SyntaxError) and error.filename:
        where = f"{Path(error.filename).name} line {error.lineno}"
        return f"Revision file {where} is not valid Python ({error.msg}); fix it."
    if isinstance(error, KeyError):
        missing = str(error.args[0]) if error.args else "?"
        for path in sorted(versions.glob("*.py")):
            if revision_markers(path).get("down_revision") == missing:
                return (
                    f"Revision file {path.name} names down_revision {missing!r}, which no "
                    "revision file has; fix it (`inv db.history` lists the others)."
                )
    frame = error.__traceback__
    where = ""
    while frame is not None:
        if Path(frame.tb_frame.f_code.co_filename).parent == versions:
            where = f"{Path(frame.tb_frame.f_code.co_filename).name} line {frame.tb_lineno}"
        frame = frame.tb_next
    detail = f"{type(error).__name__}: {error}".strip()
    if where:
        return f"Revision file {where} cannot be loaded ({detail}); fix it."
    return f"The migration scripts cannot be loaded ({detail}); fix the revision files."


def revision_markers(path: Path) -> dict[str, str]:
    try:
        return module_markers(ast.parse(path.read_text(encoding="utf-8")))
    except (SyntaxError, ValueError, OSError):
        return {}


def duplicate_ids(versions: Path) -> str | None:
    """A revision id that two files claim (Alembic would take them for two heads)."""
    seen: dict[str, str] = {}
    for path in sorted(versions.glob("*.py")):
        revision = revision_markers(path).get("revision")
        if revision is None:
            continue
        if revision in seen:
            return (
                f"Revision id {revision} is used by two files, {seen[revision]} and {path.name}; "
                "give one of them a new id (and fix the down_revision that points at it)."
            )
        seen[revision] = path.name
    return None


def build(digest: str, scripts: ScriptDirectory) -> ScriptIndex:
    order = [
        read_revision(s.revision, s.down_revision, s.doc, Path(s.path))
        for s in reversed(list(scripts.walk_revisions()))
    ]
    heads = sorted(scripts.get_heads())
    return ScriptIndex(digest, order, heads, script_problems(order, heads))


def read_revision(
    revision: str, down: str | tuple[str, ...] | list[str] | None, doc: str, path: Path
) -> Revision:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    markers = module_markers(tree)
    down_revisions = list(down) if isinstance(down, tuple | list) else [down] if down else []
    return Revision(
        revision,
        down_revisions,
        doc,
        str(path),
        destroys_data=markers.get("destroys_data"),
        destroys_data_on_downgrade=markers.get("destroys_data_on_downgrade"),
        irreversible=markers.get("irreversible"),
        downgrade_is_empty=function_is_empty(tree, "downgrade"),
        phase=markers.get("phase"),
    )


def script_problems(order: list[Revision], heads: list[str]) -> list[str]:
    """Problems in the migration scripts themselves, whatever the database."""
    problems: list[str] = []
    if len(heads) > 1:
        problems.append(several_heads(heads))
    for item in reversed(order):
        if item.downgrade_missing:
            problems.append(
                f"Revision {item.revision} ({item.doc}): downgrade() does nothing; write it, "
                'or mark the revision `irreversible = "why"`.'
            )
    return problems


def module_markers(tree: ast.Module) -> dict[str, str]:
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            for target in targets:
                if isinstance(target, ast.Name) and isinstance(value, ast.Constant) and value.value:
                    found[target.id] = str(value.value)
    return found


def function_is_empty(tree: ast.Module, name: str) -> bool:
    """True when `name()` only has a docstring, `pass` or `...` (a missing function counts too)."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return all(_is_filler(statement) for statement in node.body)
    return True


def _is_filler(statement: ast.stmt) -> bool:
    if isinstance(statement, ast.Pass):
        return True
    return isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)


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
