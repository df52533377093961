"""Two targets that reach one database (127.0.0.1 and localhost) are refused before anything is
changed, by every fleet command, shards included."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import run_inv
from tests.fleet.conftest import FleetFixture
from tests.fleet.test_run import revision_of
from uaip_db.fleet.targets import Shard

MakeFleet = Callable[..., FleetFixture]


def test_the_same_database_listed_twice_is_refused_by_every_command(
    make_fleet: MakeFleet,
) -> None:
    fleet = make_fleet(3)
    names = list(fleet.databases)
    twin = names[1]
    with fleet.path.open("a", encoding="utf-8") as file:
        file.write(
            f'[[targets]]\nname = "again"\nhost = "localhost"\n'
            f'dbname = "{fleet.databases[twin].name}"\n'
        )
    # Shards split the two names: each shard still sees the whole file's duplicates.
    count = next(n for n in range(2, 50) if Shard(0, n).holds(twin) != Shard(0, n).holds("again"))
    again_shard = next(i for i in range(count) if Shard(i, count).holds("again"))
    runs = [
        (command, *extra)
        for command in ("fleet.upgrade", "fleet.status", "fleet.check", "fleet.verify")
        for extra in ((), ("--json",))
    ] + [("fleet.upgrade", "--shard", f"{again_shard}/{count}")]
    for arguments in runs:
        result = run_inv(arguments[0], "--targets", str(fleet.path), *arguments[1:], env=fleet.env)
        assert result.returncode == 2, (arguments, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (arguments, result.stderr)
        assert f"'{twin}'" in lines[0] and "'again'" in lines[0], lines[0]
        assert "Traceback" not in result.stderr and fleet.password not in result.stderr
        assert result.stdout == "" or "Upgrading" not in result.stdout
    for database in fleet.databases.values():
        assert revision_of(database) is None  # nothing was changed
