"""The Docker paths as a user types them, against a real engine: the runner image, the seed's
compose flow, `inv db.up --backend docker` and its failures."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import BIN, CHAIN, HEAD, write_revision
from tests.docker.conftest import Compose, docker
from uaip_db.servers.docker import COMPOSE_SERVICE, IMAGE

pytestmark = pytest.mark.docker


def inv(compose: Compose, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "inv"), *args],
        cwd=compose.root,
        env=compose.env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert result.returncode == status, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_the_runner_image_runs_as_10001_without_credentials_with_postgresql_16(
    runner_image: str,
) -> None:
    assert docker("run", "--rm", "--entrypoint", "id", runner_image, "-u").stdout.strip() == (
        "10001"
    )
    versions = docker(
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        runner_image,
        "-c",
        "postgres --version; pg_dump --version; psql --version; pg_isready --version",
    ).stdout
    assert versions.count("(PostgreSQL) 16.") == 4, versions
    inspected = json.loads(docker("image", "inspect", runner_image).stdout)[0]
    history = docker("history", "--no-trunc", runner_image).stdout
    for where in (json.dumps(inspected["Config"]), history):
        assert "PASSWORD" not in where.upper().replace("PASSWORD_ENV", "")
        assert "DATABASE_URL=" not in where
    files = docker(
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        runner_image,
        "-c",
        "ls -a /app; test ! -e /app/.env && echo no-env-file",
    ).stdout
    assert "no-env-file" in files and ".git" not in files.split()
    # What the image's user can do without a home: the task list and settings, no traceback.
    status = docker("run", "--rm", runner_image, "db.status", check=False)
    assert status.returncode == 2 and "Traceback" not in status.stderr
    assert "No PostgreSQL server answers" in status.stdout + status.stderr


SLOW_INIT = """services:
  uaip-db:
    volumes:
      - ./slow-init.sh:/docker-entrypoint-initdb.d/02-slow.sh:ro
"""
SLOW_SCRIPT = """#!/bin/sh
sleep 6
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c 'CREATE DATABASE init_finished'
"""


def test_the_seed_flow_healthy_only_after_init_then_migrated_in_containers(
    compose: Compose, runner_image: str
) -> None:
    (compose.root / "slow-init.yml").write_text(SLOW_INIT)
    (compose.root / "slow-init.sh").write_text(SLOW_SCRIPT)
    (compose.root / "slow-init.sh").chmod(0o755)
    files = ["-f", "docker-compose.yml", "-f", "slow-init.yml"]
    up = compose.compose(*files, "up", "-d", COMPOSE_SERVICE)
    assert up.returncode == 0, up.stderr
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        health = docker("inspect", "-f", "{{.State.Health.Status}}", COMPOSE_SERVICE).stdout
        seen.append(health.strip())
        if seen[-1] == "healthy":
            # The moment it says healthy, every init script has finished.
            with psycopg.connect(**compose.database.connect_kwargs()) as conn:
                finished = "SELECT count(*) FROM pg_database WHERE datname = 'init_finished'"
                assert conn.execute(finished).fetchone() == (1,)
                assert conn.execute("SELECT count(*) FROM sessions").fetchone() == (0,)
            break
        time.sleep(0.25)
    assert seen[-1] == "healthy" and seen.count("starting") >= 8, seen

    # The migration runner against the init.sql database: plain db.upgrade refuses and names the
    # one command that brings it to head.
    refused = compose.compose("run", "--rm", "migrations")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "inv db.stamp --rev auto" in refused.stdout + refused.stderr
    migrated = compose.compose(
        "run", "--rm", "migrations", "db.stamp", "--rev", "auto", "db.upgrade"
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert f"Now at {HEAD}" in migrated.stdout
    again = compose.compose("run", "--rm", "migrations")
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr
    psql = compose.compose(
        "exec",
        "-T",
        COMPOSE_SERVICE,
        "psql",
        "-U",
        "uaip_user",
        "-d",
        "uaip_scoping",
        "-Atc",
        "SELECT version_num FROM alembic_version",
    )
    assert psql.stdout.strip() == HEAD, psql.stderr


def test_db_up_docker_upgrade_backup_check_down_up_keeps_the_data(compose: Compose) -> None:
    up = inv(compose, "db.up", "--backend", "docker")
    assert up.returncode == 0, up.stderr
    assert f"recorded revision {CHAIN[0]}" in up.stdout
    for task in (["db.upgrade"], ["db.check"], ["db.backup"]):
        ran = inv(compose, *task)
        assert ran.returncode == 0, (task, ran.stdout, ran.stderr)
    status = inv(compose, "db.status")
    assert f"docker: {COMPOSE_SERVICE} running (healthy)" in status.stdout
    assert "pending: 0 revision(s)" in status.stdout
    with psycopg.connect(**compose.database.connect_kwargs(), autocommit=True) as conn:
        conn.execute("INSERT INTO sessions (user_id) VALUES ('kept in the volume')")
    assert inv(compose, "db.down", "--backend", "docker").returncode == 0
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(**compose.database.connect_kwargs()).close()
    again = inv(compose, "db.up", "--backend", "docker")
    assert again.returncode == 0, again.stderr
    with psycopg.connect(**compose.database.connect_kwargs()) as conn:
        assert conn.execute("SELECT user_id FROM sessions").fetchall() == [("kept in the volume",)]

    # A password the volume does not know: one line at once, not a two-minute wait.
    started = time.monotonic()
    wrong = inv(compose, "db.up", "--backend", "docker", DB_PASSWORD="not-the-volumes")
    assert "refused the password" in one_line(wrong, 2)
    assert "not-the-volumes" not in wrong.stdout + wrong.stderr
    assert time.monotonic() - started < 60


def test_a_container_stopped_mid_upgrade_fails_in_one_line_and_the_next_upgrade_finishes(
    compose: Compose,
) -> None:
    versions = compose.root / "migrations" / "versions"
    write_revision(
        versions,
        "5eep5eep0001",
        HEAD,
        ["SELECT pg_sleep(8)", "CREATE TABLE slow_thing (id int)"],
        ["DROP TABLE slow_thing"],
    )
    assert inv(compose, "db.up", "--backend", "docker").returncode == 0
    assert inv(compose, "db.upgrade", "--rev", HEAD).returncode == 0
    upgrade = subprocess.Popen(
        [str(BIN / "inv"), "db.upgrade"],
        cwd=compose.root,
        env=compose.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    docker("stop", "-t", "2", COMPOSE_SERVICE)
    out, err = upgrade.communicate(timeout=120)
    assert upgrade.returncode in (1, 2), out + err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    assert inv(compose, "db.up", "--backend", "docker").returncode == 0
    finished = inv(compose, "db.upgrade")
    assert finished.returncode == 0, finished.stderr
    assert "Now at 5eep5eep0001" in finished.stdout


def test_a_taken_port_and_a_foreign_container_are_named_in_one_line(compose: Compose) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", compose.database.port))
        taken.listen()
        started = time.monotonic()
        result = inv(compose, "db.up", "--backend", "docker")
        assert f"Port {compose.database.port} is already taken" in one_line(result, 2)
        assert time.monotonic() - started < 30
    docker("create", "--name", COMPOSE_SERVICE, IMAGE)
    try:
        result = inv(compose, "db.up", "--backend", "docker")
        line = one_line(result, 2)
        assert f"A container named {COMPOSE_SERVICE} already exists" in line
        assert "--backend local" in line
    finally:
        docker("rm", "-f", COMPOSE_SERVICE)


def test_an_image_that_cannot_be_pulled_points_to_the_local_backend(compose: Compose) -> None:
    kept = "uaip-db-tests/kept-postgres:16"
    docker("tag", IMAGE, kept)
    docker("rmi", IMAGE)
    try:
        started = time.monotonic()
        result = inv(compose, "db.up", "--backend", "docker")
        line = one_line(result, 2)
        assert f"The image {IMAGE} is not on this machine and cannot be pulled" in line
        assert "--backend local" in line
        assert time.monotonic() - started < 60
    finally:
        docker("tag", kept, IMAGE)
        docker("rmi", kept)


def test_the_published_port_is_this_machines_only(compose: Compose) -> None:
    assert inv(compose, "db.up", "--backend", "docker").returncode == 0
    ports = json.loads(
        docker("inspect", "-f", "{{json .NetworkSettings.Ports}}", COMPOSE_SERVICE).stdout
    )
    assert {binding["HostIp"] for binding in ports["5432/tcp"]} == {"127.0.0.1"}
    assert not Path(compose.root / ".pgdata").exists()
