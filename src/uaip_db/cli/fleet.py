"""`inv fleet.upgrade`, `fleet.check`, `fleet.verify`, `fleet.status`, `fleet.report`: many
databases from a targets file, a live line per target, a table at the end (or one JSON object)."""

from __future__ import annotations

# Task bodies import what only their own task needs (marked for ruff's PLC0415): at the top of cli/, these  # noqa: E501
# imports load the backups, release, fleet, docs and servers layers for every `inv` command,
# `inv --list` included (median of 15 runs on the shared 2 cores: 1.65 s against 0.89-1.12 s).
from collections.abc import Callable
from pathlib import Path

from uaip_db import parsers
from uaip_db.cli.reporter import Say, complain, finish, say
from uaip_db.errors import UsageError
from uaip_db.fleet.report import (
    PENDING,
    FleetReport,
    TargetResult,
    fleet_reports_in,
    merge,
    read_reports,
)


def whole_number(value: str, flag: str, least: int) -> int:
    return parsers.whole_number(least).flag(value, flag)


def parallel_argument(value: str) -> int | None:
    return whole_number(value, "--parallel", 1) if value.strip() else None


def progress(total: int, as_json: bool, out: Say) -> Callable[[TargetResult], None] | None:
    """A line per target as it finishes (none with --json: stdout holds only the object)."""
    if as_json:
        return None
    done = 0

    def on_result(result: TargetResult) -> None:
        nonlocal done
        done += 1
        out(f"[{done:>{len(str(total))}}/{total}] {result.line()}")

    return on_result


def targets_argument(targets: str) -> str:
    if not targets.strip():
        raise UsageError("Name the targets file: --targets FILE (see docs/FLEET.md).")
    return targets


def upgrade(
    targets: str,
    *,
    revision: str = "head",
    parallel: str = "",
    canary: str = "0",
    shard: str = "",
    backup: bool = False,
    lock_wait: float = 60.0,
    as_json: bool = False,
    out: Say = say,
) -> None:
    from uaip_db.fleet import run  # noqa: PLC0415

    fleet = run.load_fleet(targets_argument(targets), shard or None)
    workers = parallel_argument(parallel)
    canaries = whole_number(canary, "--canary", 0)

    def header() -> None:
        if not as_json:
            where = f" (shard {fleet.shard})" if fleet.shard else ""
            first = f", the first {canaries} as canaries" if canaries else ""
            out(f"Upgrading {len(fleet.targets)} target(s){where} to {revision}{first}:")

    report = run.upgrade(
        fleet,
        revision=revision,
        parallel=workers,
        canary=canaries,
        backup=backup,
        lock_wait=lock_wait,
        on_result=progress(len(fleet.targets), as_json, out),
        on_start=header,
    )
    show(report, as_json, out)


def read_only(
    command: str, targets: str, shard: str, parallel: str, as_json: bool, out: Say
) -> None:
    from uaip_db.fleet import run  # noqa: PLC0415

    fleet = run.load_fleet(targets_argument(targets), shard or None)
    workers = parallel_argument(parallel)
    on_result = progress(len(fleet.targets), as_json, out)
    commands = {"check": run.check, "verify": run.verify, "status": run.status}
    report = commands[command](fleet, parallel=workers, on_result=on_result)
    show(report, as_json, out)


def check(targets: str, *, shard: str = "", parallel: str = "", as_json: bool = False) -> None:
    read_only("check", targets, shard, parallel, as_json, say)


def verify(targets: str, *, shard: str = "", parallel: str = "", as_json: bool = False) -> None:
    read_only("verify", targets, shard, parallel, as_json, say)


def status(targets: str, *, shard: str = "", parallel: str = "", as_json: bool = False) -> None:
    read_only("status", targets, shard, parallel, as_json, say)


def report(reports: str, *, as_json: bool = False, out: Say = say) -> None:
    """Merge the reports of a run's shards into one; exit as the whole run would have."""
    merged = merge(read_reports(report_paths(reports)))
    show(merged, as_json, out)


def report_paths(reports: str) -> list[Path]:
    """`a.json,b.json`, a glob (`reports/*.json`) or a folder (the fleet reports among its
    *.json), in name order."""
    found: list[Path] = []
    for item in (part.strip() for part in reports.split(",")):
        if not item:
            continue
        path = Path(item).expanduser()
        if path.is_dir():
            in_folder = fleet_reports_in(path)
            if not in_folder:
                raise UsageError(f"No fleet report (fleet.upgrade --json) in {path}.")
            found += in_folder
        elif any(char in item for char in "*?["):
            matches = (
                sorted(Path().glob(item))
                if not path.is_absolute()
                else sorted(Path(path.anchor).glob(str(path.relative_to(path.anchor))))
            )
            if not matches:
                raise UsageError(f"No report matches {item!r}.")
            found += matches
        else:
            found.append(path)
    return found


def show(report: FleetReport, as_json: bool, out: Say) -> None:
    if as_json:
        out(report.to_json())
    else:
        out(report.summary())
    if report.interrupted:
        complain(report.interruption())
    elif report.failed() or report.incomplete:
        complain(report.problem())
    elif report.exit_code and report.command == "check":
        behind = [r.name for r in report.targets if r.status == PENDING]
        complain(
            f"{len(behind)} target(s) have pending revisions: {', '.join(behind)}. "
            "Run `inv fleet.upgrade` with the same targets file."
        )
    if report.exit_code:
        finish(report.exit_code)
