"""The `uaip-db` service of docker-compose.yml (postgres:16 with init.sql) as a server backend.

No Docker engine runs on our machines: this is tested for the commands it runs, and
docker-compose.yml is validated offline.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from uaip_db import paths, pg, process
from uaip_db.errors import ConnectionProblem, ServerError
from uaip_db.settings import DatabaseConfig

COMPOSE_SERVICE = "uaip-db"


class DockerCompose:
    """The `uaip-db` service of docker-compose.yml (postgres:16 with init.sql)."""

    name = "docker"

    def __init__(self, compose_file: Path | None = None) -> None:
        self.compose_file = compose_file or paths.project_root() / "docker-compose.yml"

    def compose_command(self) -> list[str]:
        docker = shutil.which("docker")
        if docker and process.execute([docker, "compose", "version"], timeout=10).returncode == 0:
            return [docker, "compose", "-f", str(self.compose_file)]
        legacy = shutil.which("docker-compose")
        if legacy:
            return [legacy, "-f", str(self.compose_file)]
        raise ServerError("Docker Compose is not installed; install it, or use `--backend local`.")

    def up_command(self) -> list[str]:
        command = self.compose_command()
        wait = ["--wait"] if command[1:2] == ["compose"] else []
        return [*command, "up", "-d", *wait, COMPOSE_SERVICE]

    def down_command(self) -> list[str]:
        return [*self.compose_command(), "stop", COMPOSE_SERVICE]

    def require_engine(self) -> None:
        if not docker_engine_answers():
            raise ServerError(
                "No Docker engine answers here; start Docker, or use `inv db.up --backend local` "
                "(a local PostgreSQL 16, fetched once when the system has none)."
            )

    def up(self, config: DatabaseConfig) -> str:
        self.require_engine()
        process.run(
            self.up_command(),
            what="start the uaip-db container",
            env=compose_env(config),
            timeout=300,
        )
        wait_for_connection(config, timeout=120)
        return f"Container {COMPOSE_SERVICE} is up and healthy: {config.display_url()}."

    def down(self) -> str:
        self.require_engine()
        process.run(self.down_command(), what="stop the uaip-db container", timeout=120)
        return f"Container {COMPOSE_SERVICE} stopped; its volume keeps the data."

    def status(self) -> str:
        if not docker_engine_answers():
            return "docker: no engine answers"
        out = process.run(
            [*self.compose_command(), "ps", COMPOSE_SERVICE], what="ask docker compose", timeout=30
        )
        return "docker: " + process.last_line(out.stdout)


def wait_for_connection(config: DatabaseConfig, timeout: float) -> None:
    """Poll until `config` accepts a connection (legacy compose has no `up --wait`)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pg.connect(config).close()
            return
        except ConnectionProblem:
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{config.where()} did not accept connections within {timeout:.0f} s; "
                    "see `docker compose logs uaip-db`."
                ) from None
            time.sleep(0.5)


def compose_env(config: DatabaseConfig) -> dict[str, str]:
    """The variables docker-compose.yml reads; the password goes through the environment."""
    return {
        "DB_PORT": str(config.port),
        "DB_NAME": config.name,
        "DB_USER": config.user,
        "DB_PASSWORD": config.password,
    }


def docker_engine_answers() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        result = process.execute([docker, "info", "--format", "{{.ServerVersion}}"], timeout=10)
    except (OSError, process.TimeoutExpired):
        return False
    return result.returncode == 0
