"""Run every benchmark and print a table of medians and ratios against the raw tools.

    python bench/run.py                 # everything (about 10 minutes on 2 cores)
    python bench/run.py --quick         # fewer runs, 200k rows, no test-suite timing
    python bench/backfills.py           # the backfill benchmark alone (--rows N)
    python bench/run.py --markdown docs/PERFORMANCE.md   # also write the table there
    python bench/run.py --check         # exit 1 when a row misses its aim
    python bench/run.py --fleet         # also a fleet of 24 and 200 databases (bench/fleet.py)

Everything runs on a private throwaway PostgreSQL (the developer's database is never touched),
same machine, same run, so the ratios compare like with like.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from backfills import bench_backfill  # noqa: E402
from measure import BIN, BenchFailed, Result, command, median_of, psql  # noqa: E402
from workloads import generate_rows, write_revisions  # noqa: E402

from uaip_db.backups.dump import fastest_compression  # noqa: E402
from uaip_db.migrations import history, runner  # noqa: E402
from uaip_db.process import tool_version  # noqa: E402
from uaip_db.servers.local import find_bindir  # noqa: E402
from uaip_db.servers.scratch import ScratchServer, child_env, start_scratch_server  # noqa: E402

REPOSITORY_CHAIN = [s.revision for s in history.load().order]


def bench_upgrade(server: ScratchServer, runs: int) -> list[Result]:
    at_head = server.create_database("bench_head")
    runner.upgrade(at_head, "head")
    env = child_env(at_head)
    inv = median_of(runs, command([str(BIN / "inv"), "db.upgrade"], env))
    alembic = median_of(runs, command([str(BIN / "alembic"), "upgrade", "head"], env))
    results = [Result("inv db.upgrade, already at head", inv, alembic, "alembic upgrade head", 0.5)]
    inv_check = median_of(runs, command([str(BIN / "inv"), "db.check"], env))
    results.append(Result("inv db.check, at head", inv_check, alembic, "alembic upgrade head", 0.6))

    def fresh(program: list[str]) -> Callable[[], None]:
        def run() -> None:
            database = server.create_database("bench_fresh")
            try:
                command(program, child_env(database))()
            finally:
                server.drop_database(database.name)

        return run

    ours = median_of(runs, fresh([str(BIN / "inv"), "db.upgrade"]))
    raw = median_of(runs, fresh([str(BIN / "alembic"), "upgrade", "head"]))
    results.append(
        Result("inv db.upgrade, base -> head", ours, raw, "alembic upgrade head", 1.0, noisy=True)
    )
    return results


def bench_backup(server: ScratchServer, runs: int, rows: int, folder: Path) -> list[Result]:
    bindir = find_bindir()
    assert bindir is not None
    source = server.create_database("bench_data")
    runner.upgrade(source, "head")
    started = time.perf_counter()
    generate_rows(source, rows)
    psql(source, "VACUUM ANALYZE")
    print(f"  generated {rows} rows in {time.perf_counter() - started:.1f} s", flush=True)
    env = child_env(source)
    libpq = {**os.environ, **source.libpq_env()}
    dump_file = folder / "raw.pgdump"

    def raw_dump() -> None:
        subprocess.run(
            [str(bindir / "pg_dump"), "-Fc", "-f", str(dump_file)], env=libpq, check=True
        )

    same_compression = fastest_compression(
        str(bindir / "pg_dump"), tool_version(str(bindir / "pg_dump"))
    )

    def raw_dump_same_compression() -> None:
        subprocess.run(
            [
                str(bindir / "pg_dump"),
                "-Fc",
                f"--compress={same_compression}",
                "-f",
                str(dump_file) + ".same",
            ],
            env=libpq,
            check=True,
        )

    def ours_backup(jobs: int) -> Callable[[], None]:
        return command(
            [
                str(BIN / "inv"),
                "db.backup",
                "--no-verify",
                "--jobs",
                str(jobs),
                "--out",
                str(folder),
            ],
            env,
        )

    raw = median_of(runs, raw_dump, warmup=False)
    one = median_of(runs, ours_backup(1), warmup=False)
    two = median_of(runs, ours_backup(2), warmup=False)
    results = [
        Result("inv db.backup (1 job, with manifest)", one, raw, "pg_dump -Fc", 1.05, noisy=True),
        Result("inv db.backup --jobs 2", two, raw, "pg_dump -Fc", 0.7),
    ]
    if same_compression:
        raw_same = median_of(runs, raw_dump_same_compression, warmup=False)
        results.append(
            Result(
                f"inv db.backup (1 job) against pg_dump with its compression ({same_compression})",
                one,
                raw_same,
                f"pg_dump -Fc -Z {same_compression}",
                None,
            )
        )
    backups = sorted(p for p in folder.iterdir() if (p / "manifest.json").is_file())
    custom = next(p for p in backups if (p / "dump.pgdump").is_file())
    directory = next(p for p in backups if (p / "dump").is_dir())

    def raw_restore() -> None:
        target = server.config_for(f"bench_raw_{time.monotonic_ns() % 10**9}")
        psql(server.admin, f'CREATE DATABASE "{target.name}"')
        subprocess.run(
            [str(bindir / "pg_restore"), "--no-owner", "-1", "-d", target.name, str(dump_file)],
            env={**os.environ, **target.libpq_env()},
            check=True,
        )
        server.drop_database(target.name)

    def ours_restore(backup: Path, jobs: int) -> Callable[[], None]:
        def run() -> None:
            name = f"bench_ours_{time.monotonic_ns() % 10**9}"
            command(
                [
                    str(BIN / "inv"),
                    "db.restore",
                    str(backup),
                    "--target",
                    name,
                    "--jobs",
                    str(jobs),
                ],
                env,
            )()
            server.drop_database(name)

        return run

    def raw_restore_two() -> None:
        target = server.config_for(f"bench_raw2_{time.monotonic_ns() % 10**9}")
        psql(server.admin, f'CREATE DATABASE "{target.name}"')
        subprocess.run(
            [
                str(bindir / "pg_restore"),
                "--no-owner",
                "-j",
                "2",
                "-d",
                target.name,
                str(dump_file),
            ],
            env={**os.environ, **target.libpq_env()},
            check=True,
        )
        server.drop_database(target.name)

    raw_r = median_of(runs, raw_restore, warmup=False)
    raw_two = median_of(runs, raw_restore_two, warmup=False)
    one_r = median_of(runs, ours_restore(custom, 1), warmup=False)
    two_r = median_of(runs, ours_restore(directory, 2), warmup=False)
    results += [
        Result(
            "inv db.restore (1 job, checked + verified)",
            one_r,
            raw_r,
            "pg_restore -1",
            1.05,
            noisy=True,
        ),
        Result("inv db.restore --jobs 2 (checked + verified)", two_r, raw_r, "pg_restore -1", 0.7),
        Result(
            "raw pg_restore -j 2 of the same dump (the floor of the row above)",
            raw_two,
            raw_r,
            "pg_restore -1",
            None,
        ),
    ]
    server.drop_database(source.name)
    return results


def bench_roundtrip(server: ScratchServer, sizes: list[int], folder: Path) -> list[Result]:
    results = []
    for size in sizes:
        checkout = folder / f"revisions-{size}"
        checkout.mkdir()
        write_revisions(checkout, ROOT, size)
        env = {**child_env(server.admin), "UAIP_DB_ROOT": str(checkout)}
        # Short chains are mostly fixed cost, which moves from run to run: median of three.
        runs = 3 if size <= 25 else 1
        ours = median_of(runs, command([str(BIN / "inv"), "db.roundtrip"], env), warmup=False)
        plain = median_of(runs, functools.partial(plain_loop, server, checkout), warmup=False)
        total = size + len(REPOSITORY_CHAIN)
        results.append(
            Result(
                f"inv db.roundtrip, {size} generated revisions "
                f"({ours / total * 1000:.0f} ms per revision of the {total})",
                ours,
                plain,
                "alembic up/down/up loop",
                0.8 if size == 3 else 1.0,
            )
        )
    return results


def bench_release(server: ScratchServer, rows: int, folder: Path) -> list[Result]:
    """`inv release.check` with the last two revisions pending on `rows` rows, against what it
    replaces by hand: pg_dump -Fc, pg_restore into a copy, alembic upgrade head on the copy."""
    if len(REPOSITORY_CHAIN) < 3:
        return []
    bindir = find_bindir()
    assert bindir is not None
    folder.mkdir()
    checkout = committed_copy(folder / "checkout")
    source = server.create_database("bench_release")
    runner.upgrade(source, REPOSITORY_CHAIN[-3])
    generate_rows(source, rows)
    psql(source, "VACUUM ANALYZE")
    env = {
        **child_env(source),
        "UAIP_DB_ROOT": str(checkout),
        "UAIP_BACKUP_DIR": str(folder / "backups"),
    }
    ours = median_of(1, command([str(BIN / "inv"), "release.check"], env, cwd=checkout), False)
    quiet = median_of(
        1, command([str(BIN / "inv"), "release.check", "--no-load"], env, cwd=checkout), False
    )

    def by_hand() -> None:
        dump = folder / "by-hand.pgdump"
        libpq = {**os.environ, **source.libpq_env()}
        subprocess.run([str(bindir / "pg_dump"), "-Fc", "-f", str(dump)], env=libpq, check=True)
        copy = server.create_database("bench_release_copy")
        subprocess.run(
            [str(bindir / "pg_restore"), "--no-owner", "-d", copy.name, str(dump)],
            env={**os.environ, **copy.libpq_env()},
            check=True,
        )
        copy_env = {**child_env(copy), "UAIP_DB_ROOT": str(checkout)}
        command([str(BIN / "alembic"), "upgrade", "head"], copy_env, cwd=checkout)()
        server.drop_database(copy.name)

    raw = median_of(1, by_hand, warmup=False)
    server.drop_database(source.name)
    return [
        Result(
            f"inv release.check --no-load, {rows // 1000}k rows, 2 revisions pending",
            quiet,
            raw,
            "pg_dump -Fc, pg_restore, alembic upgrade head",
            1.2,
        ),
        Result(
            f"inv release.check (under writers: 2 s before the upgrade, >= 1 s during), "
            f"{rows // 1000}k rows",
            ours,
            raw,
            "pg_dump -Fc, pg_restore, alembic upgrade head",
            None,
        ),
    ]


def committed_copy(target: Path) -> Path:
    """The checkout's tracked files in a new git repository with one commit: the release check
    wants a clean tree, and the developer's working tree may not be."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        subprocess.run([*git, *args], cwd=target, check=True, capture_output=True)
    return target


def plain_loop(server: ScratchServer, checkout: Path) -> None:
    """What a user would otherwise write: alembic upgrade +1, downgrade -1, upgrade +1, repeat."""
    script = f"""
import os
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
config = Config("{checkout}/alembic.ini")
count = len(list(ScriptDirectory.from_config(config).walk_revisions()))
for _ in range(count):
    command.upgrade(config, "+1")
    command.downgrade(config, "-1")
    command.upgrade(config, "+1")
"""
    database = server.create_database("bench_plain")
    try:
        env = {**child_env(database), "UAIP_DB_ROOT": str(checkout)}
        command([sys.executable, "-c", script], env)()
    finally:
        server.drop_database(database.name)


def bench_backfills(server: ScratchServer, rows: int, folder: Path) -> list[Result]:
    """ops.backfill against one raw UPDATE, each with a writer running (bench/backfills.py)."""
    measured = dict(bench_backfill(server, rows, folder))
    ours, raw = measured["ops.backfill"], measured["one raw UPDATE"]
    return [
        Result(
            f"ops.backfill of {rows} conversation_history rows ({ours.rate:,.0f} rows/s; "
            f"raw UPDATE {raw.rate:,.0f} rows/s)",
            ours.seconds,
            raw.seconds,
            "one raw UPDATE",
            1.0,
            noisy=True,
        ),
        Result(
            f"a writer's worst stall during that backfill (raw UPDATE: {raw.worst_stall:.1f} s)",
            ours.worst_stall,
            None,
            "",
            0.2,
        ),
    ]


def bench_provisioning(server: ScratchServer, runs: int) -> list[Result]:
    template = server.create_database("bench_template")
    runner.upgrade(template, "head")
    server.mark_template(template.name)

    def clone() -> None:
        server.drop_database(server.create_database("bench_clone", template=template.name).name)

    def build() -> None:
        database = server.create_database("bench_build")
        runner.upgrade(database, "head")
        server.drop_database(database.name)

    ours = median_of(runs * 2, clone)
    raw = median_of(runs, build)
    return [Result("test database: clone of a head template", ours, raw, "create + upgrade", 0.2)]


def bench_sessions(runs: int, with_tests: bool) -> list[Result]:
    results = []
    # The two legs on PostgreSQL 16, what the target was set for; all six (15, 16, 17) after.
    legs = [f"migrations(pg='16', db='{db}')" for db in ("fresh", "seeded")]
    nox_time = median_of(1, command([str(BIN / "nox"), "-R", "-s", *legs], {}), warmup=True)
    results.append(Result("nox -R -s migrations (both legs, pg=16)", nox_time, None, "", 15))
    every = median_of(1, command([str(BIN / "nox"), "-R", "-s", "migrations"], {}), warmup=False)
    results.append(Result("nox -R -s migrations (6 legs: 15, 16, 17)", every, None, "", 45))
    if with_tests:
        suite = median_of(1, command([str(BIN / "pytest")], {}), warmup=False)
        results.append(
            Result("pytest (the README's, walks and Docker left out)", suite, None, "", 90)
        )
    return results


def table(results: list[Result]) -> str:
    lines = [
        "| benchmark | ours (median) | baseline | baseline (median) | ratio | aim | met |",
        "| --- | ---: | --- | ---: | ---: | --- | --- |",
    ]
    for r in results:
        baseline = f"{r.baseline:.3f} s" if r.baseline is not None else ""
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        met = {None: "", True: "met", False: "**missed**"}[r.met] + (" (noisy)" if r.noisy else "")
        lines.append(
            f"| {r.name} | {r.ours:.3f} s | {r.baseline_name} | {baseline} | {ratio} "
            f"| {r.target} | {met} |"
        )
    return "\n".join(lines)


def machine() -> str:
    bindir = find_bindir()
    version = (
        subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True
        ).stdout.strip()
        if bindir
        else "no server"
    )
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {version}"
    )


# The steps `--only` may name, in the order they run.
STEPS = (
    "upgrade",
    "provisioning",
    "roundtrip",
    "backup",
    "release",
    "backfill",
    "sessions",
    "fleet",
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer runs and rows")
    parser.add_argument("--rows", type=int, default=None, help="rows for the backup benchmark")
    parser.add_argument("--markdown", type=Path, help="write the table into this Markdown file")
    parser.add_argument("--check", action="store_true", help="exit 1 when a row misses its aim")
    parser.add_argument("--fleet", action="store_true", help="also the fleet benchmark (slow)")
    parser.add_argument(
        "--only",
        type=lambda value: value.split(","),
        default=None,
        help=f"run only these steps (comma-separated: {', '.join(STEPS)}); the table then has "
        "only their rows",
    )
    args = parser.parse_args()
    if args.only is not None:
        args.only = [name.strip() for name in args.only if name.strip()]
        if not args.only:
            parser.error("--only: name at least one step")
    else:
        args.only = []
    unknown = set(args.only) - set(STEPS)
    if unknown:
        parser.error(
            f"--only: unknown step(s) {', '.join(sorted(unknown))}; known: {', '.join(STEPS)}"
        )
    if args.markdown and args.only:
        parser.error("--markdown writes the whole table: run every step (no --only)")
    if "fleet" in args.only:
        args.fleet = True
    runs = 3 if args.quick else 5
    rows = args.rows or (200_000 if args.quick else 1_000_000)
    os.environ["UAIP_TEST_SERVER"] = "cluster"
    server = start_scratch_server()
    results: list[Result] = []
    failures: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="uaip-bench-") as scratch:
            folder = Path(scratch)
            steps: dict[str, tuple[str, Callable[[], list[Result]]]] = {
                "upgrade": ("upgrade and check", lambda: bench_upgrade(server, runs)),
                "provisioning": (
                    "test database provisioning",
                    lambda: bench_provisioning(server, runs),
                ),
                "roundtrip": (
                    "round trip scaling",
                    lambda: bench_roundtrip(server, [3, 25, 100], folder),
                ),
                "backup": (
                    "backup and restore",
                    lambda: bench_backup(server, 3, rows, folder / "b"),
                ),
                "release": (
                    "release check",
                    lambda: bench_release(server, rows, folder / "release"),
                ),
                "backfill": ("backfill", lambda: bench_backfills(server, rows, folder)),
                "sessions": ("nox and pytest", lambda: bench_sessions(runs, not args.quick)),
            }
            if args.fleet:
                from fleet import bench_fleet

                steps["fleet"] = ("fleet of 24 and 200 databases", lambda: bench_fleet(server))
            (folder / "b").mkdir()
            for name, (title, step) in steps.items():
                if args.only and name not in args.only:
                    continue
                print(f"bench: {title}...", flush=True)
                try:
                    results += step()
                except BenchFailed as failure:
                    failures.append(f"{title}: {failure}")
                    print(f"bench: {title} failed; going on", flush=True)
    finally:
        server.close()
    output = f"Machine: {machine()}\n\n{table(results)}\n"
    print(output)
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    if args.markdown and not failures:
        write_into(args.markdown, output)
    if failures:
        raise SystemExit(1)
    missed = [r.name for r in results if r.met is False]
    if missed:
        print("Missed their aim: " + "; ".join(missed), file=sys.stderr)
        if args.check:
            raise SystemExit(1)


def write_into(path: Path, output: str) -> None:
    """Replace the text between the BENCH markers of `path` with `output`."""
    text = path.read_text(encoding="utf-8")
    start, end = "<!-- BENCH:START -->", "<!-- BENCH:END -->"
    before, _, rest = text.partition(start)
    _, _, after = rest.partition(end)
    path.write_text(f"{before}{start}\n{output}{end}{after}", encoding="utf-8")


if __name__ == "__main__":
    main()
