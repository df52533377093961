"""Shared by the tests of uaip_db.docs: committed snapshots and helpers to read the README."""

from __future__ import annotations

import re

import pytest

from uaip_db.catalog.expected import snapshot_path
from uaip_db.catalog.snapshot import Snapshot
from uaip_db.docs import markdown
from uaip_db.migrations.baseline import BASELINE_TABLES

BASELINE = "03033cebb647"
HEAD = "b41d9e0c7f25"
TABLES = BASELINE_TABLES
FUNCTIONS = (
    "get_active_sessions_count()",
    "get_session_progress(p_session_id uuid)",
    "mark_abandoned_sessions()",
    "update_sessions_timestamp()",
    "update_stage_data_timestamp()",
)
CHILD_TABLES = tuple(sorted(set(TABLES) - {"sessions"}))


def committed(revision: str) -> Snapshot:
    return Snapshot.from_json(snapshot_path(revision).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def head() -> Snapshot:
    return committed(HEAD)


@pytest.fixture(scope="module")
def readme(head: Snapshot) -> str:
    return markdown.render(head, revision=HEAD)["README.md"]


def mermaid_blocks(text: str) -> list[str]:
    return re.findall(r"```mermaid\n(.*?)```", text, flags=re.DOTALL)


def section(readme: str, table: str) -> str:
    """The part of the README about one table: from its heading to the next heading."""
    return readme.split(f"\n### {table}\n", 1)[1].split("\n#", 1)[0]


def with_objects(base: Snapshot, **changes: dict[str, object]) -> Snapshot:
    """A copy of `base` with some objects replaced (keys given with `__` for spaces)."""
    objects = {key: dict(value) for key, value in base.objects.items()}
    for key, value in changes.items():
        objects[key.replace("__", " ")] = value
    return Snapshot(objects)
