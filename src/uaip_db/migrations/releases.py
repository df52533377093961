"""The application's releases (migrations/releases.toml): which version runs on which revision,
and which of them may run on a database at a given revision.

A release runs on its own revision, and on any later one reached by expand revisions only (the
previous release survives an expand step: migrations/phases.py); a contract revision after its
revision, or a database behind it, rules it out.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from uaip_db import paths
from uaip_db.errors import SettingsError
from uaip_db.migrations import history, phases

RELEASES_FILE = "releases.toml"


@dataclass(frozen=True)
class Release:
    version: str
    revision: str


@dataclass(frozen=True)
class Fit:
    """Whether `release` may run on a database at a revision, and why not."""

    release: Release
    runs: bool
    why: str

    def line(self) -> str:
        mark = "runs" if self.runs else "does not run"
        return f"{self.release.version} ({self.release.revision}): {mark}: {self.why}"


def releases_path() -> Path:
    return paths.migrations_dir() / RELEASES_FILE


def load(path: Path | None = None) -> list[Release]:
    """The releases, oldest first, each naming a revision the scripts have."""
    path = path or releases_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SettingsError(f"{path} cannot be read: {error}; fix it.") from None
    entries = data.get("release", [])
    index = history.load()
    found = []
    for number, entry in enumerate(entries if isinstance(entries, list) else [], 1):
        version, revision = entry.get("version"), entry.get("revision")
        if not isinstance(version, str) or not isinstance(revision, str):
            raise SettingsError(
                f'{path}: release {number} needs version = "..." and revision = "...".'
            )
        if index.get(revision) is None:
            raise SettingsError(
                f"{path}: release {version} names revision {revision}, which the migration "
                "scripts do not have; `inv db.history` lists them."
            )
        found.append(Release(version, revision))
    return found


def fit(
    release: Release,
    current: str,
    index: history.ScriptIndex,
    recorded: Mapping[str, str | None] | None = None,
) -> Fit:
    """Whether `release` may run on a database at `current`. `recorded`: the phase the
    database's ledger records for each applied revision, which tells a database ahead of these
    scripts (a newer release migrated it) by expand revisions only from one that is not."""
    if current == release.revision:
        return Fit(release, True, "at its own revision")
    order = [item.revision for item in index.order]
    if current not in order:
        beyond, contract = phases.beyond_scripts(index, recorded or {})
        if recorded is None or current not in beyond or len(index.heads) != 1:
            return Fit(release, False, f"the database is at {current}, which the scripts lack")
        if contract:
            return Fit(
                release,
                False,
                f"contract revision {', '.join(contract)} came after these scripts' head "
                "(the database's ledger says)",
            )
        at_head = fit(release, index.heads[0], index)
        if not at_head.runs:
            return at_head
        return Fit(
            release,
            True,
            f"ahead of these scripts' head by expand revision(s) only ({', '.join(beyond)}; "
            "the database's ledger says)",
        )
    if order.index(current) < order.index(release.revision):
        return Fit(release, False, f"the database is behind it (at {current})")
    between = order[order.index(release.revision) + 1 : order.index(current) + 1]
    contract = [r for r in between if judged(index, r) != phases.EXPAND]
    if contract:
        return Fit(release, False, f"contract revision {', '.join(contract)} came after it")
    return Fit(release, True, f"ahead of it by expand revision(s) only ({', '.join(between)})")


def judged(index: history.ScriptIndex, revision: str) -> str | None:
    item = index.get(revision)
    return phases.phase_of(item) if item is not None else None
