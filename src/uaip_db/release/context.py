"""Who ran a release check, where, and with which versions of everything that touches the data.

A version that cannot be found is recorded as why not ("not installed"), never guessed.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

from uaip_db import __version__, process
from uaip_db.errors import UaipDbError
from uaip_db.migrations.ledger import who
from uaip_db.servers.binaries import client_program
from uaip_db.settings import DatabaseConfig

LIBRARIES = (("Alembic", "alembic"), ("SQLAlchemy", "sqlalchemy"), ("psycopg", "psycopg"))
CLIENT_TOOLS = ("pg_dump", "pg_restore", "psql")


@dataclass(frozen=True)
class RunContext:
    database: str  # display URL: never the password
    env: str  # DB_ENV
    run_by: str  # user@host
    started_at: str
    versions: dict[str, str]  # "uaip-db": "1.1.0", "PostgreSQL server": "16.4", "pg_dump": ...

    def lines(self) -> list[str]:
        return [
            f"- Database: `{self.database}` (DB_ENV={self.env})",
            f"- Run by: {self.run_by}, started {self.started_at}",
            *(f"- {name}: {version}" for name, version in self.versions.items()),
        ]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_context(config: DatabaseConfig, server_version: str, started_at: str) -> RunContext:
    versions = {"uaip-db": __version__, "Python": platform.python_version()}
    for label, distribution in LIBRARIES:
        versions[label] = _distribution(distribution)
    versions["libpq (psycopg)"] = _libpq()
    versions["PostgreSQL server"] = server_version
    for name in CLIENT_TOOLS:
        versions[name] = client_tool_version(name)
    return RunContext(config.display_url(), config.env, who(), started_at, versions)


def _distribution(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _libpq() -> str:
    import psycopg  # noqa: PLC0415

    number = psycopg.pq.version()  # e.g. 160004
    return f"{number // 10000}.{number % 10000}"


def client_tool_version(name: str) -> str:
    """The version of the client program backups use (`PG_BINDIR`, the server's binaries, PATH),
    with its path."""

    try:
        program = client_program(name)
        return f"{process.tool_version(program)} ({program})"
    except UaipDbError as error:
        return f"unknown: {error}"


def server_version(conn: Any) -> str:
    """`SHOW server_version` on an open psycopg connection."""
    row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"
