"""Expand and contract: phases judged and declared, recorded in the ledger, and the start-up
check's window for the previous release (real PostgreSQL, scratch revisions of their own)."""

from __future__ import annotations

from pathlib import Path

import pytest

import uaip_db
from tests.conftest import HEAD, write_revision
from uaip_db.checks import lint
from uaip_db.migrations import history, ledger, phases, runner, snapshots
from uaip_db.pg import connection
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig

EXPAND, CONTRACT = "e0e0e0000001", "c0c0c0000002"


def add_expand_then_contract(
    server: ScratchServer, checkout: Path, contract_phase: str = 'phase = "contract"\n'
) -> None:
    """The two halves of a rename: a new column (expand), then the old one dropped (contract)."""
    versions = checkout / "migrations" / "versions"
    write_revision(
        versions,
        EXPAND,
        HEAD,
        [
            "ALTER TABLE checkpoints ADD COLUMN zz_label text",
            "COMMENT ON COLUMN checkpoints.zz_label IS 'label'",
        ],
        ["ALTER TABLE checkpoints DROP COLUMN zz_label"],
        doc="Add the label",
        markers='destroys_data_on_downgrade = "checkpoints.zz_label"\n',
    )
    write_revision(
        versions,
        CONTRACT,
        EXPAND,
        ["ALTER TABLE checkpoints DROP COLUMN stage_number"],
        ["ALTER TABLE checkpoints ADD COLUMN stage_number integer"],
        doc="Drop the stage number",
        markers=f'destroys_data = "kept in zz_label since the release before"\n{contract_phase}',
    )
    snapshots.write(snapshots.build(server))


def test_phases_are_judged_from_the_schema_change_and_declared_ones_checked(
    server: ScratchServer, checkout: Path
) -> None:
    add_expand_then_contract(server, checkout, contract_phase='phase = "expand"\n')
    index = history.load()
    added = phases.judge(index.get(EXPAND))  # type: ignore[arg-type]
    assert (added.phase, added.declared) == (phases.EXPAND, False)
    dropped = phases.judge(index.get(CONTRACT))  # type: ignore[arg-type]
    assert dropped.contradicted
    assert "drops column checkpoints.stage_number" in dropped.changes
    findings, notes, _docs = lint.lint()
    said = [f for f in findings if f.revision == CONTRACT and f.rule == "phase"]
    assert len(said) == 1 and 'Mark it phase = "contract"' in said[0].message
    assert any(f"{EXPAND} expand" in note for note in notes)


def test_the_previous_release_runs_ahead_by_expand_revisions_only(
    server: ScratchServer,
    checkout: Path,
    head_db: DatabaseConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_expand_then_contract(server, checkout)
    # The new release migrates the expand revision; the ledger keeps its phase.
    runner.upgrade(head_db, EXPAND)
    with connection(head_db) as conn:
        assert ledger.entries(conn)[EXPAND].phase == phases.EXPAND
    # The new release's own start-up check: it wants its head, the contract revision.
    with pytest.raises(uaip_db.PendingMigrations, match=CONTRACT):
        uaip_db.check_migrations(head_db)

    # The previous release: its own copy of the scripts, which ends at HEAD.
    monkeypatch.delenv("UAIP_DB_ROOT")
    status = uaip_db.check_migrations(head_db)
    assert status.ahead == [f"{EXPAND} (expand)"]
    assert "ahead of these scripts' head" in status.summary()

    # Once the contract revision runs, the previous release is refused, by name.
    monkeypatch.setenv("UAIP_DB_ROOT", str(checkout))
    runner.upgrade(head_db, "head")
    monkeypatch.delenv("UAIP_DB_ROOT")
    with pytest.raises(uaip_db.CheckFailed) as refused:
        uaip_db.check_migrations(head_db)
    assert f"{CONTRACT} (contract)" in str(refused.value)
    assert "deploy the release that has it" in str(refused.value)
