"""Fleet fixtures: N databases on the test server and a targets file naming them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig

PASSWORD_VARIABLE = "FLEET_TEST_PASSWORD"


@dataclass
class FleetFixture:
    path: Path
    databases: dict[str, DatabaseConfig]  # target name -> database, in file order
    password: str

    @property
    def env(self) -> dict[str, str]:
        """What a child process needs: the password's variable, nothing else."""
        return {PASSWORD_VARIABLE: self.password}


def targets_text(databases: dict[str, DatabaseConfig], admin: DatabaseConfig) -> str:
    lines = [
        "# a fleet for the tests",
        "[defaults]",
        f'host = "{admin.host}"',
        f"port = {admin.port}",
        f'user = "{admin.user}"',
        f'password_env = "{PASSWORD_VARIABLE}"',
        "",
    ]
    for name, database in databases.items():
        lines += ["[[targets]]", f'name = "{name}"', f'dbname = "{database.name}"', ""]
    return "\n".join(lines)


@pytest.fixture
def make_fleet(
    server: ScratchServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., FleetFixture]]:
    """`make_fleet(count, template=None)`: that many new databases (empty, or clones of a
    template) and a targets file; the password's variable is set in this process too."""
    made: list[str] = []

    def make(count: int, template: str | None = None) -> FleetFixture:
        databases = {}
        for number in range(count):
            database = server.create_database("uaip_fleet", template=template)
            made.append(database.name)
            databases[f"tenant-{number:02d}"] = database
        path = tmp_path / f"targets-{len(made)}.toml"
        path.write_text(targets_text(databases, server.admin), encoding="utf-8")
        monkeypatch.setenv(PASSWORD_VARIABLE, server.admin.password)
        return FleetFixture(path, databases, server.admin.password)

    yield make
    for name in made:
        server.drop_database(name)
