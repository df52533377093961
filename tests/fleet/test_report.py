"""Merging the shards' reports: an empty shard is said, a missing shard and the targets it holds
are named (exit 1), and shards of different counts are refused (exit 1)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import run_inv
from tests.fleet.conftest import FleetFixture
from tests.fleet.test_run import revision_of
from uaip_db.fleet.targets import Shard

MakeFleet = Callable[..., FleetFixture]


def shard_report(fleet: FleetFixture, folder: Path, shard: str) -> Path:
    result = run_inv(
        "fleet.status",
        "--targets",
        str(fleet.path),
        "--shard",
        shard,
        "--json",
        env=fleet.env,
    )
    assert result.returncode == 0, result.stderr
    path = folder / f"shard-{shard.replace('/', '-of-')}.json"
    path.write_text(result.stdout)
    return path


def test_an_empty_shard_is_said_and_a_merge_names_what_is_missing(
    make_fleet: MakeFleet, tmp_path: Path
) -> None:
    fleet = make_fleet(6)
    names = list(fleet.databases)
    # An empty shard: exit 0, said in words (and an empty JSON report), nothing touched.
    empty = next(i for i in range(40) if not any(Shard(i, 40).holds(n) for n in names))
    for command in ("fleet.upgrade", "fleet.status"):
        said = run_inv(
            command, "--targets", str(fleet.path), "--shard", f"{empty}/40", env=fleet.env
        )
        assert said.returncode == 0, said.stderr
        assert f"Shard {empty}/40 has no targets of the 6 in the targets file" in said.stdout
        as_json = run_inv(
            command,
            "--targets",
            str(fleet.path),
            "--shard",
            f"{empty}/40",
            "--json",
            env=fleet.env,
        )
        assert as_json.returncode == 0, as_json.stderr
        report = json.loads(as_json.stdout)
        assert report["targets"] == [] and report["summary"]["shards"] == [f"{empty}/40"]
    assert all(revision_of(database) is None for database in fleet.databases.values())

    # Shard 1/3 has no report: the merge names it and its targets, and exits 1.
    folder = tmp_path / "reports"
    folder.mkdir()
    for shard in ("0/3", "2/3"):
        shard_report(fleet, folder, shard)
    lost = [name for name in names if Shard(1, 3).holds(name)]
    merged = run_inv("fleet.report", str(folder))
    assert merged.returncode == 1, merged.stdout + merged.stderr
    assert "No report for shard 1/3" in merged.stderr, merged.stderr
    assert f"missing: {', '.join(lost)}" in merged.stderr if lost else True
    as_json = run_inv("fleet.report", str(folder), "--json")
    assert as_json.returncode == 1, as_json.stderr
    summary = json.loads(as_json.stdout)["summary"]
    assert summary["missing_shards"] == ["1/3"] and summary["missing_targets"] == lost
    assert summary["exit_code"] == 1
    # With it, the merge is whole: exit 0.
    shard_report(fleet, folder, "1/3")
    whole = run_inv("fleet.report", str(folder), "--json")
    assert whole.returncode == 0, whole.stderr
    summary = json.loads(whole.stdout)["summary"]
    assert summary["total"] == 6 and summary["missing_shards"] == []

    # Shards of different counts (0/2 with 1/3) are not one run: exit 1, both named.
    halves = tmp_path / "halves"
    halves.mkdir()
    first = shard_report(fleet, halves, "0/2")
    other = folder / "shard-1-of-3.json"
    mixed = run_inv("fleet.report", f"{first},{other}")
    assert mixed.returncode == 1, mixed.stdout + mixed.stderr
    lines = mixed.stderr.strip().splitlines()
    assert len(lines) == 1 and "0/2" in lines[0] and "1/3" in lines[0], mixed.stderr
