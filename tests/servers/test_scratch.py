"""Throwaway databases: fast clones, an existing server when named, nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli, sql
from tests.servers.roles import url
from uaip_db.errors import SettingsError
from uaip_db.servers.scratch import (
    ScratchServer,
    child_env,
    start_scratch_server,
    wants_existing_server,
)
from uaip_db.settings import DatabaseConfig

CHILD = """
import json, sys, time
from uaip_db.servers.scratch import start_scratch_server
server = start_scratch_server()
cluster = server.cluster
print(json.dumps({"pid": cluster.process.pid, "root": str(cluster.cluster.root)}), flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_a_killed_run_leaves_no_server_behind() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DB_HOST", "DB_PORT")}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None
    info = json.loads(child.stdout.readline())
    assert alive(info["pid"])
    child.send_signal(signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 20
    while alive(info["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(info["pid"])
    # The next run sweeps the folder the killed run could not remove.
    start_scratch_server().close()
    assert not Path(info["root"]).exists()


def test_clones_carry_the_template(server: ScratchServer, head_db: DatabaseConfig) -> None:
    assert sql(head_db, "SELECT count(*) FROM alembic_version") == [(1,)]


def test_databases_are_dropped(server: ScratchServer) -> None:
    database = server.create_database("uaip_drop_me")
    server.drop_database(database.name)
    assert sql(
        server.admin, "SELECT count(*) FROM pg_database WHERE datname = %s", (database.name,)
    ) == [(0,)]


def test_a_named_server_is_used_instead_of_a_private_cluster(
    server: ScratchServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in child_env(server.admin).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("UAIP_TEST_SERVER", "env")
    assert wants_existing_server()
    named = start_scratch_server()
    assert named.cluster is None
    database = named.create_database("uaip_named")
    assert sql(database, "SELECT current_database()") == [(database.name,)]
    named.close()
    assert sql(
        server.admin, "SELECT count(*) FROM pg_database WHERE datname = %s", (database.name,)
    ) == [(0,)]


def test_the_choice_of_server() -> None:
    assert not wants_existing_server({})
    # Settings that name a developer's server never send tests there by themselves.
    assert not wants_existing_server({"DATABASE_URL": "postgresql://u:p@h/db"})
    assert not wants_existing_server({"DB_HOST": "db"})
    assert not wants_existing_server({"DB_PORT": "15432"})
    assert not wants_existing_server({"DB_HOST": "db", "UAIP_TEST_SERVER": "cluster"})
    assert wants_existing_server({"UAIP_TEST_SERVER": "env"})
    with pytest.raises(SettingsError, match="UAIP_TEST_SERVER"):
        wants_existing_server({"UAIP_TEST_SERVER": "yes"})


def test_settings_pointing_at_a_server_do_not_send_tests_there(
    server: ScratchServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in child_env(server.admin).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("UAIP_TEST_SERVER", raising=False)
    private = start_scratch_server()
    try:
        assert private.cluster is not None
        assert private.admin.port != server.admin.port
    finally:
        private.close()


HEADER_AND_DATABASE = """
from tests.conftest import pytest_report_header
from uaip_db.servers.scratch import start_scratch_server
print(pytest_report_header(None)[0])
server = start_scratch_server()
print(server.create_database("uaip_dotenv").port)
server.close()
"""


def test_uaip_test_server_env_uses_settings_that_are_only_in_dotenv(
    server: ScratchServer, checkout: Path
) -> None:
    (checkout / ".env").write_text(f'DATABASE_URL="{url(server.admin)}"\n')
    result = run_cli(
        "python",
        "-c",
        HEADER_AND_DATABASE,
        env={"UAIP_DB_ROOT": str(checkout), "UAIP_TEST_SERVER": "env", "PYTHONPATH": sys_path()},
    )
    assert result.returncode == 0, result.stderr
    header, port = result.stdout.strip().splitlines()
    assert "the server the settings name (UAIP_TEST_SERVER=env)" in header, header
    assert int(port) == server.admin.port


def sys_path() -> str:
    """This process's import path, for a child that imports the tests' modules."""
    return os.pathsep.join([str(ROOT), *(os.environ.get("PYTHONPATH", "").split(os.pathsep))])
