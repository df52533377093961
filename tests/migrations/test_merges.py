"""Branches and their merge are first-class: check, lint, downgrade plans, the round trip and
the snapshots handle them (tested on a scratch branch-and-merge)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import HEAD, run_inv, write_revision
from uaip_db.checks import roundtrip
from uaip_db.migrations import applied, history, runner, snapshots
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig

LEFT, RIGHT, MERGE = "1eft00000001", "219b70000002", "3e79e0000003"


@pytest.fixture
def merged(checkout: Path, server: ScratchServer) -> Path:
    """head -> LEFT (a table) and head -> RIGHT (a column), joined by MERGE; snapshots built."""
    versions = checkout / "migrations" / "versions"
    write_revision(
        versions,
        LEFT,
        HEAD,
        [
            "CREATE TABLE left_notes (id int PRIMARY KEY)",
            "COMMENT ON TABLE left_notes IS 'l'",
            "COMMENT ON COLUMN left_notes.id IS 'i'",
        ],
        ["DROP TABLE left_notes"],
        doc="Left branch",
        markers='destroys_data_on_downgrade = "left_notes"',
    )
    write_revision(
        versions,
        RIGHT,
        HEAD,
        [
            "ALTER TABLE checkpoints ADD COLUMN zz_test_label text",
            "COMMENT ON COLUMN checkpoints.zz_test_label IS 'l'",
        ],
        ["ALTER TABLE checkpoints DROP COLUMN zz_test_label"],
        doc="Right branch",
        markers='destroys_data_on_downgrade = "checkpoints.zz_test_label"',
    )
    path = write_revision(versions, MERGE, LEFT, [], [], doc="Merge")
    path.write_text(
        path.read_text().replace(
            f'down_revision = "{LEFT}"', f'down_revision = ("{LEFT}", "{RIGHT}")'
        )
    )
    snapshots.write(snapshots.build(server))
    return checkout


def test_the_merge_is_one_head_and_checks_out(merged: Path, empty_db: DatabaseConfig) -> None:
    index = history.load()
    assert index.heads == [MERGE] and index.problems == []
    env = {"UAIP_DB_ROOT": str(merged)}
    assert run_inv("db.upgrade", database=empty_db, env=env).returncode == 0
    checked = run_inv("db.check", database=empty_db, env=env)
    assert checked.returncode == 0, checked.stderr
    verified = run_inv("db.verify", database=empty_db, env=env)
    assert verified.returncode == 0, verified.stderr
    linted = run_inv("db.lint", env=env)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_a_branch_snapshot_holds_only_its_own_ancestors(merged: Path) -> None:
    from uaip_db.catalog import expected

    assert "table left_notes" not in expected.snapshot(RIGHT).objects
    assert "column checkpoints.zz_test_label" not in expected.snapshot(LEFT).objects
    assert {"table left_notes", "column checkpoints.zz_test_label"} <= set(
        expected.snapshot(MERGE).objects
    )


def test_downgrade_plans_across_the_merge(merged: Path, empty_db: DatabaseConfig) -> None:
    env = {"UAIP_DB_ROOT": str(merged)}
    runner.upgrade(empty_db, "head")
    one_step = run_inv("db.downgrade", database=empty_db, env=env)
    assert one_step.returncode == 2
    assert f"would step through the merge revision {MERGE}" in one_step.stderr
    to_head = run_inv("db.downgrade", "--rev", HEAD, "--yes", database=empty_db, env=env)
    assert to_head.returncode == 0, to_head.stderr
    assert "by 3 revision(s)" in to_head.stdout
    assert applied.current_revisions(empty_db) == (HEAD,)
    runner.upgrade(empty_db, "head")
    to_base = run_inv("db.downgrade", "--rev", "base", "--yes", database=empty_db, env=env)
    assert to_base.returncode == 0, to_base.stderr
    assert f"by {len(history.load().order)} revision(s)" in to_base.stdout
    assert applied.current_revisions(empty_db) == ()


def test_the_round_trip_walks_both_branches_and_the_merge(
    merged: Path, server: ScratchServer
) -> None:
    times = roundtrip.run(server)
    assert [t.revision for t in times][-3:] == [
        t for t in [r.revision for r in history.load().order][-3:]
    ]
    assert {LEFT, RIGHT, MERGE} <= {t.revision for t in times}
    assert [t.merge for t in times if t.revision == MERGE] == [True]
