"""Where a database comes from: the local cluster backend for real, docker compose offline."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT, run_inv
from uaip_db.errors import ServerError
from uaip_db.servers.binaries import wanted_major
from uaip_db.servers.docker import COMPOSE_SERVICE, DockerCompose
from uaip_db.servers.local import (
    LocalCluster,
    PidFile,
    another_major,
    cluster_status,
    find_bindir,
    local_cluster_root,
)
from uaip_db.servers.scratch import free_port
from uaip_db.settings import DatabaseConfig


@pytest.fixture
def cluster_home(shared_folder: Path) -> Iterator[Path]:
    yield shared_folder / "pgdata"
    pid_file = PidFile.read(shared_folder / "pgdata" / "data")
    if pid_file and pid_file.process_is_postgres():
        bindir = find_bindir()
        assert bindir is not None
        LocalCluster(shared_folder / "pgdata", bindir).down()


def test_finds_server_binaries() -> None:
    bindir = find_bindir()
    assert bindir is not None
    assert (bindir / "initdb").is_file() and (bindir / "postgres").is_file()


def test_pg_bindir_setting_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("initdb", "pg_ctl", "postgres"):
        (fake / tool).write_text("")
    monkeypatch.setenv("PG_BINDIR", str(fake))
    assert find_bindir() == fake


def test_a_cluster_of_another_major_gets_a_way_that_works(tmp_path: Path) -> None:
    up = another_major(tmp_path, 15, 16, "scoping")
    assert "keep it with UAIP_PG_VERSION=15, or move it to 16:" in up
    # Every command of the way names the major it needs, whatever the environment says.
    assert "`UAIP_PG_VERSION=15 inv db.up db.backup db.down`" in up
    assert "`UAIP_PG_VERSION=16 inv db.up db.restore BACKUP --target scoping --yes`" in up
    # Down, a backup cannot travel: pg_restore refuses what a newer pg_dump wrote.
    down = another_major(tmp_path, 16, 15, "scoping")
    assert down.endswith(
        "keep it with UAIP_PG_VERSION=16 (a backup PostgreSQL 16 writes cannot be restored "
        "into 15)."
    )
    assert "db.restore" not in down


def test_db_up_down_up_keeps_the_data(cluster_home: Path) -> None:
    port = free_port()
    password = "p@ss:w/rd%#' local"
    env = {
        "UAIP_PGDATA": str(cluster_home),
        "DB_HOST": "localhost",
        "DB_PORT": str(port),
        "DB_NAME": "scoping_local",
        "DB_USER": "scoper",
        "DB_PASSWORD": password,
        "DB_ENV": "development",
    }
    first = run_inv("db.up", "--backend", "local", "db.upgrade", env=env)
    assert first.returncode == 0, first.stderr
    assert "created" in first.stdout and password not in first.stdout + first.stderr
    assert f"Local PostgreSQL {wanted_major()}." in first.stdout
    config = DatabaseConfig(
        host="localhost", port=port, name="scoping_local", user="scoper", password=password
    )
    with psycopg.connect(**config.connect_kwargs(), autocommit=True) as conn:
        conn.execute("INSERT INTO sessions (user_id) VALUES ('kept across restarts')")

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**{**config.connect_kwargs(), "password": "wrong"}).close()

    down = run_inv("db.down", "--backend", "local", env=env)
    assert down.returncode == 0, down.stderr
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(**config.connect_kwargs()).close()

    again = run_inv("db.up", "--backend", "local", env=env)
    assert again.returncode == 0, again.stderr
    assert "started" in again.stdout
    with psycopg.connect(**config.connect_kwargs(), autocommit=True) as conn:
        assert conn.execute("SELECT user_id FROM sessions").fetchall() == [
            ("kept across restarts",)
        ]
        assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)
    pid_file = PidFile.read(cluster_home / "data")
    assert pid_file is not None and pid_file.process_is_postgres() and pid_file.port == port

    status = run_inv("db.status", env=env)
    assert "local cluster: running" in status.stdout
    assert "pending: 0 revision(s)" in status.stdout
    assert f"local cluster: running PostgreSQL {wanted_major()}, pid" in status.stdout
    assert f"database: reachable, PostgreSQL {wanted_major()}." in status.stdout


def test_a_taken_port_is_reported(cluster_home: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        bindir = find_bindir()
        assert bindir is not None
        with pytest.raises(ServerError, match=f"Port {port} is already taken"):
            LocalCluster(cluster_home, bindir).up(DatabaseConfig(port=port))


def test_db_up_refuses_a_remote_host(cluster_home: Path) -> None:
    bindir = find_bindir()
    assert bindir is not None
    from uaip_db.errors import SettingsError

    with pytest.raises(SettingsError, match="is not this machine"):
        LocalCluster(cluster_home, bindir).up(DatabaseConfig(host="db.example.org"))


def test_compose_commands_name_the_service() -> None:
    compose = DockerCompose(ROOT / "docker-compose.yml")
    if shutil.which("docker-compose") is None and shutil.which("docker") is None:
        pytest.fail(
            "neither docker nor docker-compose is installed; .ci/run installs docker-compose"
        )
    up = compose.up_command()
    assert up[-3:] == ["up", "-d", COMPOSE_SERVICE] or up[-4:] == [
        "up",
        "-d",
        "--wait",
        COMPOSE_SERVICE,
    ]
    assert str(ROOT / "docker-compose.yml") in up
    assert compose.down_command()[-2:] == ["stop", COMPOSE_SERVICE]


def test_compose_file_is_valid_and_wired_to_the_settings() -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.fail(
            "docker-compose is not installed; .ci/run installs it (apt-get install docker-compose)"
        )
    result = subprocess.run(
        [compose, "-f", str(ROOT / "docker-compose.yml"), "config"],
        env={
            "PATH": "/usr/bin:/bin",
            "DB_PORT": "25432",
            "DB_PASSWORD": "from-env",
            "DB_USER": "u",
            "DB_NAME": "n",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config = result.stdout
    assert "image: postgres:16" in config
    # compose v1 writes the short form, v2 the long one.
    assert "127.0.0.1:25432:5432" in config or (
        "published: 25432" in config and "target: 5432" in config and "host_ip: 127.0.0.1" in config
    )
    assert "POSTGRES_PASSWORD: from-env" in config and "POSTGRES_USER: u" in config
    assert "/docker-entrypoint-initdb.d/" in config and "init.sql" in config
    # Probed over TCP: the image's init server listens on the socket only, so a socket probe
    # says healthy while init.sql still runs.
    assert "pg_isready -h 127.0.0.1" in config
    assert "uaip-db-data:/var/lib/postgresql/data" in config


def test_a_cluster_folder_with_a_quote_in_its_name(cluster_home: Path) -> None:
    quoted = cluster_home.parent / "it's here"
    env = {
        "UAIP_PGDATA": str(quoted),
        "DB_HOST": "localhost",
        "DB_PORT": str(free_port()),
        "DB_PASSWORD": "secret-q",
    }
    try:
        up = run_inv("db.up", "--backend", "local", env=env)
        assert up.returncode == 0, up.stderr
        assert "created" in up.stdout
    finally:
        bindir = find_bindir()
        assert bindir is not None
        pid_file = PidFile.read(quoted / "data")
        if pid_file and pid_file.process_is_postgres():
            LocalCluster(quoted, bindir).down()


def test_db_up_with_another_password_says_the_cluster_keeps_its_own(cluster_home: Path) -> None:
    env = {
        "UAIP_PGDATA": str(cluster_home),
        "DB_HOST": "localhost",
        "DB_PORT": str(free_port()),
        "DB_PASSWORD": "first-password",
    }
    assert run_inv("db.up", "--backend", "local", env=env).returncode == 0
    again = run_inv("db.up", "--backend", "local", env={**env, "DB_PASSWORD": "other"})
    assert again.returncode == 2
    assert "keeps the password it was created with" in again.stderr
    assert "already running" in again.stderr and "other" not in again.stderr.replace("another", "")


def test_a_checkout_without_a_cluster_says_so_and_creates_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The first `inv db.status` / `db.up` of a fresh clone, as an ordinary account (the case
    # that was a traceback: a .pgdata the code had not created was removed).
    monkeypatch.setenv("UAIP_DB_ROOT", str(tmp_path))
    monkeypatch.delenv("UAIP_PGDATA", raising=False)
    root = local_cluster_root()
    assert cluster_status(root, wanted_major()).startswith("local cluster: none yet")
    if os.geteuid() != 0:
        assert root == tmp_path / ".pgdata"
        assert not root.exists()
