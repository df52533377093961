"""Where a database server comes from: a local cluster, docker compose, or throwaway servers."""

from __future__ import annotations

from typing import Protocol

from uaip_db.errors import ServerError, UsageError
from uaip_db.servers.binaries import Report
from uaip_db.servers.docker import DockerCompose, docker_engine_answers
from uaip_db.servers.local import LocalCluster
from uaip_db.settings import DatabaseConfig


class Backend(Protocol):
    """A way to run the developer's server: each returns one line saying what it did."""

    name: str

    def up(self, config: DatabaseConfig) -> str: ...

    def down(self) -> str: ...

    def status(self) -> str: ...


def choose_backend(forced: str | None = None, report: Report | None = None) -> Backend:
    """Docker when an engine answers (or `forced`), else a local cluster run by the binaries of
    the wanted major version, fetched first when this machine lacks them (`report` says so)."""
    if forced not in (None, "", "docker", "local"):
        raise UsageError(f"--backend {forced!r} is not known; use docker or local.")
    if forced == "docker":
        return DockerCompose()
    if forced == "local":
        return LocalCluster(report=report)
    if docker_engine_answers():
        return DockerCompose()
    try:
        return LocalCluster(report=report)
    except ServerError as error:
        raise ServerError(f"{error} Or start Docker (no engine answers now).") from None
