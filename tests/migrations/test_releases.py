"""Named releases (migrations/releases.toml) and which of them may run on a database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import HEAD, run_inv
from tests.migrations.test_phases import CONTRACT, EXPAND, add_expand_then_contract
from uaip_db.errors import SettingsError
from uaip_db.migrations import history, releases, runner
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig


def test_a_release_runs_ahead_by_expand_revisions_only(
    server: ScratchServer, checkout: Path, head_db: DatabaseConfig
) -> None:
    add_expand_then_contract(server, checkout)
    listed = checkout / "migrations" / "releases.toml"
    listed.write_text(
        listed.read_text()
        + f'\n[[release]]\nversion = "8.0.0"\nrevision = "{HEAD}"\n'
        + f'\n[[release]]\nversion = "9.0.0"\nrevision = "{EXPAND}"\n'
        + f'\n[[release]]\nversion = "9.1.0"\nrevision = "{CONTRACT}"\n'
    )
    env = {"UAIP_DB_ROOT": str(checkout)}
    runner.upgrade(head_db, EXPAND)
    expanded = json.loads(run_inv("db.releases", "--json", database=head_db, env=env).stdout)
    runs = {fit["version"]: fit["runs"] for fit in expanded["runs"]}
    assert runs["9.0.0"] and runs["8.0.0"]  # the previous release runs on the expanded schema
    assert not runs["9.1.0"]  # the new release needs its contract revision first
    runner.upgrade(head_db, "head")
    shown = run_inv("db.releases", database=head_db, env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"9.0.0 ({EXPAND}): does not run: contract revision {CONTRACT} came after it" in (
        shown.stdout
    )
    assert f"9.1.0 ({CONTRACT}): runs: at its own revision" in shown.stdout
    assert f"8.0.0 ({HEAD}): does not run" in shown.stdout


def test_a_release_naming_an_unknown_revision_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "releases.toml"
    bad.write_text('[[release]]\nversion = "1.0"\nrevision = "feedfacecafe"\n')
    with pytest.raises(SettingsError, match="feedfacecafe, which the migration scripts do not"):
        releases.load(bad)


def test_the_previous_release_s_checkout_agrees_with_its_start_up_check(
    server: ScratchServer, checkout: Path, head_db: DatabaseConfig
) -> None:
    """From the previous release's checkout (its scripts end at HEAD), a database a newer
    release took ahead by an expand revision runs it, as `db.check` says, and one taken past a
    contract revision does not (db.releases said "which the scripts lack" for both)."""
    add_expand_then_contract(server, checkout)
    runner.upgrade(head_db, EXPAND)
    own = {"UAIP_DB_ROOT": str(Path(__file__).resolve().parents[2])}
    assert run_inv("db.check", database=head_db, env=own).returncode == 0
    index = history.load()  # this checkout's scripts, as the previous release has them
    at_head = {r.revision: releases.fit(r, HEAD, index).runs for r in releases.load()}
    ahead = json.loads(run_inv("db.releases", "--json", database=head_db, env=own).stdout)
    assert {fit["revision"]: fit["runs"] for fit in ahead["runs"]} == at_head
    assert all("by expand revision(s) only" in fit["why"] for fit in ahead["runs"] if fit["runs"])
    runner.upgrade(head_db, "head")
    past = json.loads(run_inv("db.releases", "--json", database=head_db, env=own).stdout)
    assert not any(fit["runs"] for fit in past["runs"])
    assert all(f"contract revision {CONTRACT}" in fit["why"] for fit in past["runs"])


def test_releases_of_a_database_that_cannot_be_read_say_why_and_exit_2(
    server: ScratchServer,
) -> None:
    missing = server.config_for("uaip_no_such_database")
    shown = run_inv("db.releases", database=missing)
    assert shown.returncode == 2, shown.stdout + shown.stderr
    assert "1.0.0: " in shown.stdout  # the releases are listed all the same
    assert "uaip_no_such_database" in shown.stderr and len(shown.stderr.splitlines()) == 1
    assert "Traceback" not in shown.stderr and missing.password not in shown.stdout + shown.stderr
    as_json = run_inv("db.releases", "--json", database=missing)
    assert as_json.returncode == 2
    data = json.loads(as_json.stdout)
    assert data["current"] == [] and "uaip_no_such_database" in data["error"]


def test_releases_of_an_empty_database_say_it_records_no_revision(
    empty_db: DatabaseConfig,
) -> None:
    shown = run_inv("db.releases", database=empty_db)
    assert shown.returncode == 0, shown.stderr
    assert "records no single revision (recorded: none)" in shown.stdout
