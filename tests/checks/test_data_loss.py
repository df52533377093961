"""Data loss computed from the schema: a downgrade's guard and the round trip need no marker."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import HEAD, run_inv, sql, write_revision
from uaip_db.catalog.snapshot import Snapshot
from uaip_db.checks import roundtrip
from uaip_db.checks.data_loss import DataLoss, lost_objects, undeclared
from uaip_db.errors import RoundtripFailed
from uaip_db.migrations import applied, runner
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig

NOTES = "7ab1e0000001"
CREATE_NOTES = [
    "CREATE TABLE zz_test_notes (note_id serial PRIMARY KEY, body text NOT NULL)",
    "ALTER TABLE checkpoints ADD COLUMN zz_test_label text",
]
DROP_NOTES = ["ALTER TABLE checkpoints DROP COLUMN zz_test_label", "DROP TABLE zz_test_notes"]


def add_unmarked_revision(checkout: Path) -> None:
    write_revision(
        checkout / "migrations" / "versions", NOTES, HEAD, CREATE_NOTES, DROP_NOTES, doc="Notes"
    )


def test_lost_objects_are_read_from_two_schemas() -> None:
    before = Snapshot(
        {
            "table zz_test_notes": {},
            "column zz_test_notes.body": {},
            "table checkpoints": {},
            "column checkpoints.zz_test_label": {},
            "column checkpoints.checkpoint_id": {},
        }
    )
    after = Snapshot({"table checkpoints": {}, "column checkpoints.checkpoint_id": {}})
    lost = lost_objects(before, after)
    assert lost.tables == ["zz_test_notes"] and lost.columns == ["checkpoints.zz_test_label"]
    assert not lost_objects(after, before)


def test_a_marker_covers_what_it_names_and_nothing_else() -> None:
    losses = [DataLoss("zz_test_notes", 10), DataLoss("checkpoints.zz_test_label", 3)]
    assert undeclared(losses, None) == losses
    assert undeclared(losses, "zz_test_notes") == [DataLoss("checkpoints.zz_test_label", 3)]
    assert undeclared(losses, "zz_test_notes, checkpoints") == []
    assert undeclared(losses, "every table this revision made") == []  # prose covers it all


def test_an_unmarked_downgrade_of_a_table_with_rows_is_refused(
    empty_db: DatabaseConfig, checkout: Path
) -> None:
    add_unmarked_revision(checkout)
    runner.upgrade(empty_db, "head")
    sql(
        empty_db,
        "INSERT INTO zz_test_notes (body) SELECT 'n' || g FROM generate_series(1, 10) AS g",
    )
    env = {"UAIP_DB_ROOT": str(checkout)}
    refused = run_inv("db.downgrade", database=empty_db, env=env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "would drop zz_test_notes: 10 row(s)" in refused.stdout
    assert "--yes" in refused.stderr
    assert sql(empty_db, "SELECT count(*) FROM zz_test_notes") == [(10,)]
    assert applied.current_revisions(empty_db) == (NOTES,)
    done = run_inv("db.downgrade", "--yes", database=empty_db, env=env)
    assert done.returncode == 0, done.stderr
    assert applied.current_revisions(empty_db) == (HEAD,)


def test_an_empty_new_table_downgrades_without_asking(
    empty_db: DatabaseConfig, checkout: Path
) -> None:
    add_unmarked_revision(checkout)
    runner.upgrade(empty_db, "head")
    result = run_inv("db.downgrade", database=empty_db, env={"UAIP_DB_ROOT": str(checkout)})
    assert result.returncode == 0, result.stderr
    assert applied.current_revisions(empty_db) == (HEAD,)


def test_the_round_trip_catches_rows_an_unmarked_downgrade_drops(
    server: ScratchServer, checkout: Path
) -> None:
    add_unmarked_revision(checkout)
    with pytest.raises(RoundtripFailed) as raised:
        roundtrip.run(server)
    message = str(raised.value)
    assert f"revision {NOTES} (Notes)" in message
    assert "drops data the revision does not declare" in message
    assert "zz_test_notes: 3 row(s)" in message and "checkpoints.zz_test_label" in message


def test_the_round_trip_accepts_a_declared_loss(server: ScratchServer, checkout: Path) -> None:
    write_revision(
        checkout / "migrations" / "versions",
        NOTES,
        HEAD,
        CREATE_NOTES,
        DROP_NOTES,
        doc="Notes",
        markers='destroys_data_on_downgrade = "zz_test_notes, checkpoints.zz_test_label"',
    )
    assert roundtrip.run(server)[-1].revision == NOTES


def test_a_table_made_by_hand_is_not_counted_as_what_a_downgrade_drops(
    head_db: DatabaseConfig,
) -> None:
    sql(head_db, "CREATE TABLE hand_made (id int)")
    sql(head_db, "INSERT INTO hand_made VALUES (1), (2)")
    # --yes: whatever the head revision's downgrade drops, the question is about hand_made.
    result = run_inv("db.downgrade", "--yes", database=head_db)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hand_made" not in result.stdout + result.stderr
    assert sql(head_db, "SELECT count(*) FROM hand_made") == [(2,)]
