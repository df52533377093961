"""The stairway round trip catches downgrades that leave things behind or lose rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import CHAIN, FREE_COLUMN, HEAD, run_inv, write_revision
from uaip_db.checks import roundtrip
from uaip_db.errors import RoundtripFailed
from uaip_db.servers.scratch import ScratchServer


def test_the_real_chain_round_trips(server: ScratchServer) -> None:
    lines: list[str] = []
    times = roundtrip.run(server, report=lines.append)
    assert [t.revision for t in times] == CHAIN
    assert all(t.up > 0 and t.down > 0 and t.up_again > 0 for t in times)
    assert len(lines) == len(CHAIN) and "up again" in lines[0]


def test_a_downgrade_that_forgets_an_index_is_named(server: ScratchServer, checkout: Path) -> None:
    write_revision(
        checkout / "migrations" / "versions",
        "c0ffee000001",
        HEAD,
        upgrade=[
            # FREE_COLUMN, not a column named here: a later revision may drop any other.
            f"CREATE INDEX idx_sessions_free ON sessions ({FREE_COLUMN.name})",
            "COMMENT ON TABLE checkpoints IS 'saved states'",
        ],
        downgrade=["COMMENT ON TABLE checkpoints IS NULL"],
        doc="Index checkpoints by time",
    )
    with pytest.raises(RoundtripFailed) as raised:
        roundtrip.run(server)
    message = str(raised.value)
    assert "revision c0ffee000001 (Index checkpoints by time)" in message
    assert "did not restore the schema" in message
    assert "index idx_sessions_free: unexpected" in message


def test_a_downgrade_that_drops_a_columns_data_is_named(
    server: ScratchServer, checkout: Path
) -> None:
    write_revision(
        checkout / "migrations" / "versions",
        "c0ffee000002",
        HEAD,
        upgrade=[f"ALTER TABLE sessions ALTER COLUMN {FREE_COLUMN.name} TYPE text"],
        downgrade=[
            f"UPDATE sessions SET {FREE_COLUMN.name} = NULL",
            f"ALTER TABLE sessions ALTER COLUMN {FREE_COLUMN.name} TYPE {FREE_COLUMN.type}",
        ],
        doc="Unbounded project names",
    )
    with pytest.raises(RoundtripFailed) as raised:
        roundtrip.run(server)
    message = str(raised.value)
    assert "revision c0ffee000002 (Unbounded project names)" in message
    assert "table sessions: row contents changed" in message


def test_declared_data_loss_is_accepted(server: ScratchServer, checkout: Path) -> None:
    write_revision(
        checkout / "migrations" / "versions",
        "c0ffee000003",
        HEAD,
        upgrade=["ALTER TABLE sessions ADD COLUMN nickname text"],
        downgrade=["ALTER TABLE sessions DROP COLUMN nickname"],
        markers='destroys_data_on_downgrade = "sessions.nickname"',
    )
    times = roundtrip.run(server)
    assert times[-1].revision == "c0ffee000003"


def test_an_upgrade_that_changes_rows_is_named(server: ScratchServer, checkout: Path) -> None:
    write_revision(
        checkout / "migrations" / "versions",
        "c0ffee000004",
        HEAD,
        upgrade=["DELETE FROM quality_metrics"],
        downgrade=[],
        markers='irreversible = "test"',
    )
    with pytest.raises(RoundtripFailed, match="quality_metrics: 3 rows -> 0"):
        roundtrip.run(server)


def test_the_task_reports_each_step(checkout: Path) -> None:
    result = run_inv("db.roundtrip", env={"UAIP_DB_ROOT": str(checkout)})
    assert result.returncode == 0, result.stderr
    assert "03033cebb647  up" in result.stdout and "Round trip passed" in result.stdout


PEOPLE = "9e0a1e000001"
CONTRACT = "9e0a1e000002"


def add_people_then_drop_nickname(server: ScratchServer, checkout: Path, declared: str) -> None:
    """A scratch table of its own, then a contract step that drops one of its columns."""
    from uaip_db.migrations import snapshots

    versions = checkout / "migrations" / "versions"
    write_revision(
        versions,
        PEOPLE,
        HEAD,
        [
            "CREATE TABLE zz_people (id serial PRIMARY KEY, nickname text, note text)",
            "COMMENT ON TABLE zz_people IS 'people'",
        ],
        ["DROP TABLE zz_people"],
        doc="People",
        markers='destroys_data_on_downgrade = "zz_people"\n',
    )
    write_revision(
        versions,
        CONTRACT,
        PEOPLE,
        ["ALTER TABLE zz_people DROP COLUMN nickname"],
        ["ALTER TABLE zz_people ADD COLUMN nickname text"],
        doc="Drop nickname",
        markers=declared,
    )
    snapshots.write(snapshots.build(server))


def test_a_declared_drop_round_trips_and_is_reported(server: ScratchServer, checkout: Path) -> None:
    add_people_then_drop_nickname(
        server, checkout, 'destroys_data = "nickname moved to note in the release before"\n'
    )
    lines: list[str] = []
    times = roundtrip.run(server, report=lines.append)
    contract = next(t for t in times if t.revision == CONTRACT)
    assert contract.dropped == ("zz_people.nickname",)
    assert any("the upgrade drops zz_people.nickname (declared)" in line for line in lines)


def test_an_undeclared_drop_is_named(server: ScratchServer, checkout: Path) -> None:
    add_people_then_drop_nickname(server, checkout, "")
    with pytest.raises(RoundtripFailed) as raised:
        roundtrip.run(server)
    message = str(raised.value)
    assert f"revision {CONTRACT} (Drop nickname)" in message
    assert "the upgrade drops data the revision does not declare" in message
    assert "zz_people.nickname" in message


def test_revisions_after_a_backfill_round_trip(server: ScratchServer, checkout: Path) -> None:
    """The backfill's own progress table is the project's, not sample data."""
    versions = checkout / "migrations" / "versions"
    (versions / "bf0000000001_backfill.py").write_text(
        f'''"""Backfill a column."""
from alembic import op

from uaip_db.ops import backfill

revision = "bf0000000001"
down_revision = "{HEAD}"
branch_labels = None
depends_on = None
destroys_data_on_downgrade = "checkpoints.zz_label"


def upgrade() -> None:
    op.execute("ALTER TABLE checkpoints ADD COLUMN zz_label text")
    op.execute("COMMENT ON COLUMN checkpoints.zz_label IS 'label'")
    backfill(op, "checkpoints", set={{"zz_label": "'x'"}}, where="zz_label IS NULL")


def downgrade() -> None:
    op.execute("ALTER TABLE checkpoints DROP COLUMN zz_label")
'''
    )
    write_revision(
        versions,
        "bf0000000002",
        "bf0000000001",
        ["COMMENT ON COLUMN checkpoints.zz_label IS 'a label, kept'"],
        ["COMMENT ON COLUMN checkpoints.zz_label IS 'label'"],
    )
    times = roundtrip.run(server)
    assert [t.revision for t in times][-2:] == ["bf0000000001", "bf0000000002"]
