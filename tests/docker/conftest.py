"""The Docker paths against a real engine at DOCKER_HOST (CI starts one: ../shared/docker).

They run whenever an engine answers; without one they are skipped, unless UAIP_REQUIRE_DOCKER
is set (CI sets it, so a missing engine fails CI instead of passing it quietly). They share one
container name (`uaip-db`), so they take turns across pytest's workers, and they never touch a
`uaip-db` container that they did not make.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli_env
from uaip_db.servers.docker import COMPOSE_SERVICE, DockerCompose, container, docker_engine_answers
from uaip_db.servers.scratch import free_port
from uaip_db.settings import REQUIRE_DOCKER, DatabaseConfig

RUNNER_IMAGE = "uaip-db-migrations"
TURNS = Path(tempfile.gettempdir()) / f"uaip-db-docker-tests-{os.geteuid()}.lock"


def docker(
    *args: str, timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess[str]:
    docker_cli = shutil.which("docker")
    assert docker_cli is not None
    return subprocess.run(
        [docker_cli, *args], capture_output=True, text=True, timeout=timeout, check=check
    )


@pytest.fixture(scope="session")
def engine() -> None:
    if docker_engine_answers():
        return
    if REQUIRE_DOCKER.read():
        pytest.fail(
            "UAIP_REQUIRE_DOCKER is on but no Docker engine answers at DOCKER_HOST="
            f"{os.environ.get('DOCKER_HOST', '(unset)')}"
        )
    pytest.skip("no Docker engine answers at DOCKER_HOST (CI starts one)")


@pytest.fixture(scope="session")
def runner_image(engine: None) -> str:
    """The migration runner image, built from this checkout as the README says (with the
    host's network: the engine here gives containers none to the outside)."""
    with taking_turns():
        built = docker(
            "build", "--network", "host", "-q", "-t", RUNNER_IMAGE, str(ROOT), timeout=900
        )
    assert built.returncode == 0, built.stderr
    return RUNNER_IMAGE


@dataclass
class Compose:
    """A scratch checkout with its own compose project, its database settings, and a way to run
    docker-compose and inv in it as a user would."""

    root: Path
    database: DatabaseConfig

    def env(self, **extra: str) -> dict[str, str]:
        return cli_env(self.database, UAIP_DB_ROOT=str(self.root), **extra)

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*DockerCompose(self.root / "docker-compose.yml").compose_command(), *args],
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture
def compose(engine: None, checkout: Path) -> Iterator[Compose]:
    shutil.copy(ROOT / "docker-compose.yml", checkout / "docker-compose.yml")
    database = DatabaseConfig(
        host="localhost",
        port=free_port(),
        name="uaip_scoping",
        user="uaip_user",
        password="docker-test-password",
    )
    made = Compose(checkout, database)
    with taking_turns():
        found = container()
        if found is not None:
            pytest.skip(f"a {COMPOSE_SERVICE} container exists that these tests did not make")
        try:
            yield made
        finally:
            made.compose("down", "-v", "--remove-orphans", timeout=120)
            left = container()
            if left is not None and DockerCompose(checkout / "docker-compose.yml").made(left):
                docker("rm", "-f", COMPOSE_SERVICE, check=False)


@contextlib.contextmanager
def taking_turns() -> Iterator[None]:
    """An exclusive lock across pytest's workers: one Docker test at a time."""
    fd = os.open(TURNS, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
