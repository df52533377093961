"""Expand and contract: which revisions the previous release of the application survives.

A deploy migrates first, then replaces the application's instances one by one, so for a while
the previous release and the new one run on the same schema. An `expand` revision keeps the
previous release working (additions, nullable or defaulted columns, wider types, new indexes,
backfills, comments); a `contract` revision does not (drops, renames, narrowing, NOT NULL on a
column the previous release may not write) and runs only once every instance runs the new one.

A revision says which it is (`phase = "expand"`); one that says nothing is judged from its
committed snapshots, what the schema loses or tightens, and a revision without snapshots to
judge is taken for `contract` (the safe side). The runner records each applied revision's
phase in the ledger, so an application that does not know a revision can still read it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from uaip_db.catalog import expected
from uaip_db.catalog.snapshot import Snapshot
from uaip_db.migrations.history import Revision, ScriptIndex

EXPAND, CONTRACT = "expand", "contract"
PHASES = (EXPAND, CONTRACT)


@dataclass(frozen=True)
class Judgement:
    phase: str
    declared: bool
    changes: tuple[str, ...]  # what in its schema change the previous release could trip over

    @property
    def contradicted(self) -> bool:
        """Declared expand, but its schema change is a contract one."""
        return self.declared and self.phase == EXPAND and bool(self.changes)

    def line(self) -> str:
        how = "declared" if self.declared else "judged from its schema change"
        because = f": {'; '.join(self.changes[:3])}" if self.changes else ""
        return f"{self.phase} ({how}){because}"


def contract_changes(before: Snapshot, after: Snapshot) -> list[str]:
    """What the previous release could trip over, going from `before` to `after`."""
    found: list[str] = []
    old_tables, new_tables = before.tables(), after.tables()
    found += [f"drops table {table}" for table in sorted(old_tables - new_tables)]
    old_columns, new_columns = before.of_kind("column"), after.of_kind("column")
    for name in sorted(old_columns):
        table = name.rsplit(".", 1)[0]
        if table not in new_tables:
            continue
        if name not in new_columns:
            found.append(f"drops column {name}")
            continue
        was, now = old_columns[name], new_columns[name]
        if was.get("type") != now.get("type") and not widened(
            str(was.get("type")), str(now.get("type"))
        ):
            found.append(f"changes the type of {name} ({was.get('type')} -> {now.get('type')})")
        if not was.get("not_null") and now.get("not_null") and not now.get("default"):
            found.append(f"makes {name} NOT NULL without a default")
    return found


def sized(column_type: str) -> tuple[str, tuple[int, ...]] | None:
    """A sized type as (name, sizes): `numeric(10,2)` is ("numeric", (10, 2)); None for others."""
    match = re.fullmatch(
        r"(character varying|varchar|character|char|numeric|bit varying)\((\d+)(?:,(\d+))?\)",
        column_type,
    )
    if not match:
        return None
    return match.group(1), tuple(int(n) for n in match.groups()[1:] if n is not None)


def widened(before: str, after: str) -> bool:
    """A sized type made larger (varchar(255) -> varchar(500)): every old value still fits."""
    old, new = sized(before), sized(after)
    return bool(old and new and old[0] == new[0] and new[1][0] >= old[1][0])


def judge(item: Revision) -> Judgement:
    """The revision's phase: as declared, else from its committed snapshots (a merge only joins
    heads: expand)."""
    if item.is_merge:
        return Judgement(item.phase if item.phase in PHASES else EXPAND, item.phase in PHASES, ())
    before, after = expected.committed(item.parent), expected.committed(item.revision)
    if before is None or after is None:
        changes: tuple[str, ...] = ("no committed snapshots to judge it by",)
    else:
        changes = tuple(contract_changes(before, after))
    if item.phase in PHASES:
        return Judgement(item.phase, True, changes)
    return Judgement(CONTRACT if changes else EXPAND, False, changes)


def phase_of(item: Revision) -> str:
    return judge(item).phase


def beyond_scripts(
    index: ScriptIndex, recorded: Mapping[str, str | None]
) -> tuple[list[str], list[str]]:
    """The applied revisions these scripts lack (`recorded`: each one's phase, as the ledger
    keeps it), and those of them not recorded as expand: a newer release migrated the database;
    the previous release runs on it only when the second list is empty."""
    beyond = sorted(revision for revision in recorded if index.get(revision) is None)
    return beyond, [revision for revision in beyond if recorded[revision] != EXPAND]
