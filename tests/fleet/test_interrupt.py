"""Ctrl-C during `inv fleet.upgrade`: nothing new starts, the running upgrades roll back their
revision in progress, and the report names each target's outcome (exit 130)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import BIN, HEAD, ROOT, cli_env, sql, write_revision
from tests.fleet.conftest import FleetFixture
from tests.fleet.test_run import revision_of

MakeFleet = Callable[..., FleetFixture]
SLEEPY = "5ee95ee95ee9"
SLEEPING = "SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(3)%'"


def at_default_sigint_in_a_group_of_its_own() -> None:
    # As at a terminal: SIGINT at its default (a suite started in the background passes it on
    # ignored), and a process group that Ctrl-C reaches as a whole.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.setpgrp()


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_ctrl_c_starts_nothing_new_and_names_each_outcome(
    make_fleet: MakeFleet, head_template: str, checkout: Path, as_json: bool
) -> None:
    fleet = make_fleet(6, template=head_template)
    write_revision(
        checkout / "migrations" / "versions",
        SLEEPY,
        HEAD,
        ["CREATE TABLE slept (id int)", "SELECT pg_sleep(3)"],
        ["DROP TABLE slept"],
        doc="Sleep",
    )
    arguments = ["fleet.upgrade", "--targets", str(fleet.path), "--parallel", "3"]
    process = subprocess.Popen(
        [str(BIN / "inv"), *arguments, *(["--json"] if as_json else [])],
        cwd=ROOT,
        env=cli_env(None, **fleet.env, UAIP_DB_ROOT=str(checkout)),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=at_default_sigint_in_a_group_of_its_own,
    )
    first = next(iter(fleet.databases.values()))
    deadline = time.monotonic() + 60
    while len(sql(first, SLEEPING)) < 3:
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.05)
    interrupted = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=60)
    took = time.monotonic() - interrupted
    print(f"from SIGINT to exit: {took:.2f} s")
    assert process.returncode == 130, out + err
    assert took < 5, (took, out, err)
    assert "Traceback" not in out + err
    names = list(fleet.databases)
    # The first wave's revision in progress was rolled back: each stays at the old head; the
    # three the wave had not reached were never touched.
    for database in fleet.databases.values():
        assert revision_of(database) == HEAD
        assert not sql(database, "SELECT to_regclass('slept')")[0][0]
    if as_json:
        report = json.loads(out)
        found = {item["name"]: item for item in report["targets"]}
        assert report["summary"]["interrupted"] is True
        assert report["summary"]["exit_code"] == 130
    else:
        table = out.splitlines()
        found = {n: next(line for line in table if line.startswith(f"{n} ")) for n in names}
    for name in names[:3]:
        said = json.dumps(found[name]) if as_json else found[name]
        assert "rolled back" in said and HEAD in said, said
    for name in names[3:]:
        said = json.dumps(found[name]) if as_json else found[name]
        assert "not started" in said, said
    assert "not started: " + ", ".join(names[3:]) in err, err
    assert "rolled back: " + ", ".join(names[:3]) in err, err
