"""Fleet benchmark: `inv fleet.upgrade` over N databases on one server, against the loop a user
would otherwise write (`for db in ...; do alembic upgrade head; done`), base -> head and at head.

    python bench/run.py --fleet            # with the other benchmarks
    python bench/fleet.py [24 200]         # this one alone

Each side gets its own N fresh databases on the same throwaway server, in the same run.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from measure import BIN, Result, command  # noqa: E402

from uaip_db.servers.scratch import ScratchServer, child_env, start_scratch_server  # noqa: E402
from uaip_db.settings import DatabaseConfig  # noqa: E402

PASSWORD_VARIABLE = "BENCH_FLEET_PASSWORD"
SIZES = (24, 200)


def targets_file(folder: Path, admin: DatabaseConfig, databases: list[DatabaseConfig]) -> Path:
    lines = [
        "[defaults]",
        f'host = "{admin.host}"',
        f"port = {admin.port}",
        f'user = "{admin.user}"',
        f'password_env = "{PASSWORD_VARIABLE}"',
    ]
    for number, database in enumerate(databases):
        lines += ["[[targets]]", f'name = "t{number:03d}"', f'dbname = "{database.name}"']
    path = folder / f"targets-{len(databases)}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bench_fleet(server: ScratchServer, sizes: tuple[int, ...] = SIZES) -> list[Result]:
    results = []
    workers = str(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="uaip-bench-fleet-") as scratch:
        for size in sizes:
            ours_dbs = [server.create_database("bench_fleet") for _ in range(size)]
            loop_dbs = [server.create_database("bench_loop") for _ in range(size)]
            path = targets_file(Path(scratch), server.admin, ours_dbs)
            fleet = command(
                [str(BIN / "inv"), "fleet.upgrade", "--targets", str(path), "--parallel", workers],
                {PASSWORD_VARIABLE: server.admin.password, "DB_ENV": "ci"},
            )
            loops = [
                command([str(BIN / "alembic"), "upgrade", "head"], child_env(db)) for db in loop_dbs
            ]

            def loop(steps: list[Callable[[], None]] = loops) -> None:
                for step in steps:
                    step()

            try:
                ours_up, raw_up = timed(fleet), timed(loop)
                ours_again, raw_again = timed(fleet), timed(loop)
            finally:
                for database in ours_dbs + loop_dbs:
                    server.drop_database(database.name)
            per_up = ours_up / size * 1000
            per_again = ours_again / size * 1000
            results += [
                Result(
                    f"inv fleet.upgrade, {size} databases base -> head "
                    f"({per_up:.0f} ms per target; loop {raw_up / size * 1000:.0f} ms)",
                    ours_up,
                    raw_up,
                    f"loop of alembic upgrade head x{size}",
                    0.25,
                ),
                Result(
                    f"inv fleet.upgrade, {size} databases at head "
                    f"({per_again:.0f} ms per target; loop {raw_again / size * 1000:.0f} ms)",
                    ours_again,
                    raw_again,
                    f"loop of alembic upgrade head x{size}",
                    0.25,
                ),
            ]
    return results


def main() -> None:
    from run import table

    sizes = tuple(int(arg) for arg in sys.argv[1:]) or SIZES
    os.environ["UAIP_TEST_SERVER"] = "cluster"
    server = start_scratch_server()
    try:
        print(table(bench_fleet(server, sizes)))
    finally:
        server.close()


if __name__ == "__main__":
    main()
