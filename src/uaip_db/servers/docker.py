"""The `uaip-db` service of docker-compose.yml (postgres:16 with init.sql) as a server backend.

Before compose runs, the usual ways a start fails are looked for and named in one line: no
engine, an image that is not here and cannot be pulled, a container of that name that another
project made, a port another server holds. While the container starts, a password its volume
does not know, or a container that stops or keeps restarting, ends the wait at once.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from uaip_db import paths, pg, process
from uaip_db.errors import ConnectionProblem, PasswordRefused, ServerError
from uaip_db.servers.local import port_answers
from uaip_db.settings import DatabaseConfig

COMPOSE_SERVICE = "uaip-db"
IMAGE = "postgres:16"
LOCAL_WAY_OUT = "or use `inv db.up --backend local` (a local PostgreSQL 16, fetched once)"
# What `docker inspect` says of one container.
Inspected = dict[str, Any]
# Compose labels the containers it makes with the folder of the compose file.
COMPOSE_FOLDER_LABEL = "com.docker.compose.project.working_dir"


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
        raise ServerError("Docker Compose is not installed; install it, " + LOCAL_WAY_OUT + ".")

    def up_command(self) -> list[str]:
        # Health is waited for here (`wait_until_healthy`), with compose v1 and v2 alike.
        return [*self.compose_command(), "up", "-d", COMPOSE_SERVICE]

    def down_command(self) -> list[str]:
        return [*self.compose_command(), "stop", COMPOSE_SERVICE]

    def require_engine(self) -> None:
        if not docker_engine_answers():
            raise ServerError("No Docker engine answers here; start Docker, " + LOCAL_WAY_OUT + ".")

    def up(self, config: DatabaseConfig) -> str:
        self.require_engine()
        found = container()
        if found is not None and not self.made(found):
            raise ServerError(
                f"A container named {COMPOSE_SERVICE} already exists, made "
                f"{describe_maker(found)}: remove it (`docker rm -f {COMPOSE_SERVICE}`), "
                + LOCAL_WAY_OUT
                + "."
            )
        if not field(found, "State", "Running"):
            if port_answers("localhost", config.port):
                raise ServerError(
                    f"Port {config.port} is already taken by another server; stop it, or set "
                    "DB_PORT to a free port."
                )
            require_image()
        process.run(
            self.up_command(),
            what="start the uaip-db container",
            env=compose_env(config),
            timeout=300,
        )
        wait_until_healthy(config, timeout=120)
        return f"Container {COMPOSE_SERVICE} is up and healthy: {config.display_url()}."

    def made(self, found: Inspected) -> bool:
        """Whether compose made `found` from this checkout's docker-compose.yml."""
        folder = field(found, "Config", "Labels", COMPOSE_FOLDER_LABEL)
        return isinstance(folder, str) and (
            Path(folder).resolve() == self.compose_file.parent.resolve()
        )

    def down(self) -> str:
        self.require_engine()
        process.run(self.down_command(), what="stop the uaip-db container", timeout=120)
        return f"Container {COMPOSE_SERVICE} stopped; its volume keeps the data."

    def status(self) -> str:
        if not docker_engine_answers():
            return "docker: no engine answers"
        found = container()
        if found is None:
            return f"docker: no {COMPOSE_SERVICE} container"
        health = field(found, "State", "Health", "Status")
        status = field(found, "State", "Status") or "unknown"
        return f"docker: {COMPOSE_SERVICE} {status}" + (f" ({health})" if health else "")


def describe_maker(found: Inspected) -> str:
    folder = field(found, "Config", "Labels", COMPOSE_FOLDER_LABEL)
    return f"by docker compose in {folder}" if folder else "outside docker compose"


def field(found: Inspected | None, *keys: str) -> Any:
    """`docker inspect`'s value at `keys`, or None where any level is missing."""
    value: Any = found
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def docker_program() -> str:
    docker = shutil.which("docker")
    if docker is None:
        raise ServerError("The docker command is not installed; install it, " + LOCAL_WAY_OUT + ".")
    return docker


def container() -> Inspected | None:
    """`docker inspect uaip-db`, or None when there is no such container."""
    result = process.execute([docker_program(), "inspect", COMPOSE_SERVICE], timeout=30)
    if result.returncode != 0:
        return None
    try:
        found = json.loads(result.stdout)
    except ValueError:
        return None
    return found[0] if isinstance(found, list) and found and isinstance(found[0], dict) else None


def require_image() -> None:
    """The image is here, or is pulled now; when it cannot be, say so before compose does."""
    docker = docker_program()
    if process.execute([docker, "image", "inspect", IMAGE], timeout=30).returncode == 0:
        return
    pulled = process.execute([docker, "pull", IMAGE], timeout=600)
    if pulled.returncode != 0:
        raise ServerError(
            f"The image {IMAGE} is not on this machine and cannot be pulled "
            f"({process.last_line(pulled.stderr or pulled.stdout)}); pull or load it where a "
            "registry is reachable, " + LOCAL_WAY_OUT + "."
        )


def wait_until_healthy(config: DatabaseConfig, timeout: float) -> None:
    """Poll until `config` accepts a connection; stop at once when it never will: a password the
    volume's cluster does not know, a container that stopped or keeps restarting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pg.connect(config).close()
            return
        except PasswordRefused:
            raise ServerError(
                f"The {COMPOSE_SERVICE} container refused the password for {config.user}: its "
                "volume keeps the password it was first created with. Set DB_PASSWORD back, or "
                "change it in the server (ALTER ROLE), or start afresh with `docker compose "
                "down -v` (which deletes the data)."
            ) from None
        except ConnectionProblem:
            found = container()
            if field(found, "State", "Restarting") or field(found, "State", "Status") in (
                "exited",
                "dead",
            ):
                raise ServerError(
                    f"The {COMPOSE_SERVICE} container stopped while starting "
                    f"({last_log_line()}); see `docker logs {COMPOSE_SERVICE}`."
                ) from None
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{config.where()} did not accept connections within {timeout:.0f} s; "
                    f"see `docker logs {COMPOSE_SERVICE}`."
                ) from None
            time.sleep(0.5)


def last_log_line() -> str:
    logs = process.execute([docker_program(), "logs", "--tail", "20", COMPOSE_SERVICE], timeout=30)
    return process.last_line(logs.stderr or logs.stdout)


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
