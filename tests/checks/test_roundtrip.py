"""The stairway round trip catches downgrades that leave things behind or lose rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import CHAIN, HEAD, run_cli, write_revision
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
            "CREATE INDEX idx_checkpoints_created ON checkpoints (created_at)",
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
    assert "index idx_checkpoints_created: unexpected" in message


def test_a_downgrade_that_drops_a_columns_data_is_named(
    server: ScratchServer, checkout: Path
) -> None:
    write_revision(
        checkout / "migrations" / "versions",
        "c0ffee000002",
        HEAD,
        upgrade=["ALTER TABLE sessions ALTER COLUMN project_name TYPE text"],
        downgrade=[
            "UPDATE sessions SET project_name = NULL",
            "ALTER TABLE sessions ALTER COLUMN project_name TYPE varchar(500)",
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
    result = run_cli("inv", "db.roundtrip", env={"UAIP_DB_ROOT": str(checkout)})
    assert result.returncode == 0, result.stderr
    assert "03033cebb647  up" in result.stdout and "Round trip passed" in result.stdout
