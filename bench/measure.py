"""What every benchmark shares: a result row, the median of runs, a command to time, psql."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from uaip_db.servers.local import find_bindir  # noqa: E402
from uaip_db.settings import DatabaseConfig  # noqa: E402

BIN = Path(sys.executable).parent


class BenchFailed(Exception):
    """A measured command failed; the other benchmarks still run and the table still prints."""


@dataclass
class Result:
    """One row: our time, the raw tool's in the same run, and the aim it is held to (a ratio
    to the raw tool when there is one, else seconds; None for rows that only inform)."""

    name: str
    ours: float
    baseline: float | None
    baseline_name: str
    aim: float | None
    # Rows whose run-to-run spread on a shared 2-core machine is larger than their margin.
    noisy: bool = False

    @property
    def ratio(self) -> float | None:
        return self.ours / self.baseline if self.baseline else None

    @property
    def target(self) -> str:
        if self.aim is None:
            return "informs"
        return f"<= {self.aim:g}x" if self.baseline is not None else f"<= {self.aim:g} s"

    @property
    def met(self) -> bool | None:
        if self.aim is None:
            return None
        measured = self.ratio if self.baseline is not None else self.ours
        return measured is not None and measured <= self.aim


def median_of(runs: int, action: Callable[[], object], warmup: bool = True) -> float:
    if warmup:
        action()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def command(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> Callable[[], None]:
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DB_", "DATABASE_URL", "UAIP_TEST_SERVER"))
    }
    full_env.update(env)

    def run() -> None:
        result = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True)
        if result.returncode != 0:
            output = (result.stdout[-1500:] + result.stderr[-1500:]).strip()
            raise BenchFailed(f"{' '.join(args)} failed:\n{output}")

    return run


def psql(database: DatabaseConfig, sql: str) -> None:
    bindir = find_bindir()
    assert bindir is not None
    subprocess.run(
        [str(bindir / "psql"), "-q", "-X", "-v", "ON_ERROR_STOP=1", "-c", sql],
        env={**os.environ, **database.libpq_env()},
        check=True,
        capture_output=True,
    )
