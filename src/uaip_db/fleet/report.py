"""What a fleet run found, per target and in sum; its JSON; merging the reports of shards.

{"targets": [{"name", "status", "from", "to", "seconds", "error", "details"}, ...],
 "summary": {"command", "revision", "shards", "total", "<status>": count, ..., "seconds",
             "failed": [names], "missing_shards", "missing_targets", "interrupted",
             "exit_code"},
 "fleet": [every target name of the targets file]}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uaip_db import errors
from uaip_db.errors import (
    CheckFailed,
    SettingsError,
    UsageError,
)
from uaip_db.fleet.targets import parse_shard

UPGRADED = "upgraded"
AT_HEAD = "at-head"
FAILED = "failed"
SKIPPED = "skipped"
PENDING = "pending"
VERIFIED = "verified"
DRIFTED = "drifted"
# After Ctrl-C: its revision in progress was rolled back (it stays at the one it reached), or
# its upgrade never began.
ROLLED_BACK = "rolled-back"
NOT_STARTED = "not-started"
INTERRUPTED_STATUSES = frozenset({ROLLED_BACK, NOT_STARTED})
STATUSES = (
    UPGRADED,
    AT_HEAD,
    PENDING,
    VERIFIED,
    DRIFTED,
    SKIPPED,
    ROLLED_BACK,
    NOT_STARTED,
    FAILED,
)
# A target in one of these makes the run exit 1 and is named.
FAILING = frozenset({FAILED, DRIFTED})
COMMANDS = ("upgrade", "check", "verify", "status")


@dataclass(frozen=True)
class TargetResult:
    name: str
    status: str
    from_revision: str | None = None
    to_revision: str | None = None
    seconds: float = 0.0
    error: str | None = None
    # Pending revisions (check, status) or the first differences (verify).
    details: tuple[str, ...] = ()
    # False when the target's revisions could not be read (no "at base" for it).
    revision_known: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "from": self.from_revision,
            "to": self.to_revision,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "details": list(self.details),
            "revision_known": self.revision_known,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str) -> TargetResult:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise SettingsError(f"{source} holds a target without a name; is it a fleet report?")
        status = data.get("status")
        if status not in STATUSES:
            raise SettingsError(f"{source}: target {data['name']!r} has unknown status {status!r}.")
        details = data.get("details") or []
        return cls(
            name=data["name"],
            status=status,
            from_revision=_text(data.get("from")),
            to_revision=_text(data.get("to")),
            seconds=float(data.get("seconds") or 0.0),
            error=_text(data.get("error")),
            details=tuple(str(line) for line in details),
            revision_known=data.get("revision_known", True) is not False,
        )

    def line(self) -> str:
        """One line for the live progress and the final table."""
        moved = ""
        if self.status == UPGRADED:
            moved = f"{self.from_revision or 'base'} -> {self.to_revision}"
        elif self.to_revision or self.from_revision:
            moved = f"at {self.to_revision or self.from_revision}"
        elif self.status != SKIPPED and self.revision_known:
            moved = "at base"
        text = f"{self.name:<24} {self.status:<11} {moved:<30} {self.seconds:7.2f} s"
        if self.error:
            text += f"  {self.error}"
        return text.rstrip()


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class FleetReport:
    command: str
    revision: str | None
    targets: tuple[TargetResult, ...]
    seconds: float
    shards: tuple[str, ...] = field(default=())
    # Ctrl-C ended the run: nothing new started (exit 130).
    interrupted: bool = False
    # The name of every target of the targets file, whichever shard it is in: a merge of the
    # shards' reports names the targets no report holds.
    fleet: tuple[str, ...] = field(default=())
    # Only in a merged report: shards without a report, and the targets they hold (exit 1).
    missing_shards: tuple[str, ...] = field(default=())
    missing_targets: tuple[str, ...] = field(default=())

    def count(self, status: str) -> int:
        return sum(1 for result in self.targets if result.status == status)

    def failed(self) -> list[str]:
        return [result.name for result in self.targets if result.status in FAILING]

    @property
    def incomplete(self) -> bool:
        """A merged report that lacks a shard's report, or targets of the file."""
        return bool(self.missing_shards or self.missing_targets)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return errors.INTERRUPTED
        if self.failed() or self.incomplete:
            return errors.CHECK_FAILED
        if self.command == "check" and self.count(PENDING):
            return errors.PENDING
        return 0

    def summary_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "revision": self.revision,
            "shards": list(self.shards),
            "total": len(self.targets),
            **{status: self.count(status) for status in STATUSES},
            "seconds": round(self.seconds, 3),
            "failed": self.failed(),
            "missing_shards": list(self.missing_shards),
            "missing_targets": list(self.missing_targets),
            "interrupted": self.interrupted,
            "exit_code": self.exit_code,
        }

    def to_json(self) -> str:
        return json.dumps(
            {
                "targets": [r.to_dict() for r in self.targets],
                "summary": self.summary_dict(),
                "fleet": list(self.fleet),
            },
            indent=2,
        )

    def summary(self) -> str:
        """The table at the end of a run, then one line of counts."""
        if not self.targets and len(self.shards) == 1:
            of = f" of the {len(self.fleet)} in the targets file" if self.fleet else ""
            return f"Shard {self.shards[0]} has no targets{of}; nothing to do."
        lines = [f"{'target':<24} {'status':<11} {'revision':<30} {'time':>9}"]
        lines += [result.line() for result in self.targets]
        for result in self.targets:
            lines += [f"  {result.name}: {detail}" for detail in result.details]
        counts = ", ".join(
            f"{self.count(status)} {status}" for status in STATUSES if self.count(status)
        )
        lines.append(
            f"{len(self.targets)} target(s): {counts or 'none'}; {self.seconds:.2f} s"
            + (f" (shard {', '.join(self.shards)})" if self.shards else "")
        )
        if self.incomplete:
            lines.append(self.missing())
        return "\n".join(lines)

    def missing(self) -> str:
        """What a merged report lacks: the shards with no report and the targets they hold."""
        text = ""
        if self.missing_shards:
            text = f"No report for shard {', '.join(self.missing_shards)}"
        if self.missing_targets:
            text += (
                f"{'; ' if text else 'No report holds '}{len(self.missing_targets)} target(s) "
                f"missing: {', '.join(self.missing_targets)}"
            )
        return text + "."

    def interruption(self) -> str:
        """The closing line of an interrupted run: what became of each target, what to do."""
        parts = [f"{self.count(UPGRADED)} upgraded"]
        for status, what in ((ROLLED_BACK, "rolled back"), (NOT_STARTED, "not started")):
            names = [r.name for r in self.targets if r.status == status]
            if names:
                parts.append(f"{what}: {', '.join(names)}")
        failed = self.failed()
        if failed:
            parts.append(f"failed: {', '.join(failed)}")
        return (
            f"Interrupted; {'; '.join(parts)}. Each stays at the revision in its line; run the "
            "same command again to finish."
        )

    def problem(self) -> str:
        """The closing line when the run fails: which targets, and what to do."""
        failed = self.failed()
        if not failed:
            return f"{self.missing()} Add the missing shards' reports (fleet.upgrade --json)."
        skipped = [r.name for r in self.targets if r.status == SKIPPED]
        if self.command == "verify":
            text = f"{len(failed)} target(s) differ from their revision's schema or failed: "
        else:
            text = f"{len(failed)} target(s) failed: "
        text += ", ".join(failed) + "."
        if skipped:
            text += f" {len(skipped)} target(s) skipped because a canary failed."
        if self.command == "upgrade":
            text += " Each stays at the revision it had; fix it and run the same command again."
        if self.incomplete:
            text += f" {self.missing()}"
        return text

    @classmethod
    def from_json(cls, text: str, source: str) -> FleetReport:
        try:
            data = json.loads(text)
            summary = data["summary"]
            targets = data["targets"]
        except (ValueError, KeyError, TypeError):
            raise SettingsError(f"{source} is not a fleet report (fleet.upgrade --json).") from None
        if not isinstance(summary, dict) or not isinstance(targets, list):
            raise SettingsError(f"{source} is not a fleet report (fleet.upgrade --json).")
        shards = summary.get("shards") or []
        return cls(
            command=str(summary.get("command") or "upgrade"),
            revision=_text(summary.get("revision")),
            targets=tuple(TargetResult.from_dict(item, source) for item in targets),
            seconds=float(summary.get("seconds") or 0.0),
            shards=tuple(str(shard) for shard in shards),
            interrupted=summary.get("interrupted") is True,
            fleet=tuple(str(name) for name in data.get("fleet") or []),
            missing_shards=tuple(str(shard) for shard in summary.get("missing_shards") or []),
            missing_targets=tuple(str(name) for name in summary.get("missing_targets") or []),
        )


def fleet_reports_in(folder: Path) -> list[Path]:
    """The fleet reports among a folder's *.json (reports/ also holds release reports' JSON
    twins), in name order."""
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            FleetReport.from_json(path.read_text(encoding="utf-8"), str(path))
        except (OSError, UnicodeDecodeError, SettingsError):
            continue
        found.append(path)
    return found


def read_reports(paths: Sequence[Path | str]) -> list[tuple[str, FleetReport]]:
    if not paths:
        raise UsageError("Name the reports to merge: inv fleet.report SHARD-0.json SHARD-1.json.")
    found = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise UsageError(f"Report {path} cannot be read; check the path.") from None
        found.append((str(path), FleetReport.from_json(text, str(path))))
    return found


def merge(reports: Iterable[tuple[str, FleetReport]]) -> FleetReport:
    """One report from the shards' reports: every target once (a target or a shard in two is
    refused), the longest shard's time (shards run side by side). Shards of different counts
    are refused (exit 1); a shard without a report, and the targets of the file no report
    holds, are named in the merged report, which then exits 1."""
    merged: list[TargetResult] = []
    owner: dict[str, str] = {}
    commands: set[str] = set()
    revisions: set[str | None] = set()
    shards: list[str] = []
    shard_owner: dict[str, str] = {}
    counts: dict[int, str] = {}  # shard count -> the first report with it
    fleets: dict[frozenset[str], tuple[str, tuple[str, ...]]] = {}  # -> (report, file order)
    seconds = 0.0
    interrupted = False
    for source, report in reports:
        commands.add(report.command)
        revisions.add(report.revision)
        seconds = max(seconds, report.seconds)
        interrupted = interrupted or report.interrupted
        if report.fleet:
            fleets.setdefault(frozenset(report.fleet), (source, report.fleet))
        for text in report.shards or ("0/1",):  # a report without --shard covers the fleet
            try:
                shard = parse_shard(text)
            except UsageError:
                raise SettingsError(f"{source} names shard {text!r}, which is not I/N.") from None
            if str(shard) in shard_owner:
                raise SettingsError(
                    f"Shard {shard} is in both {shard_owner[str(shard)]} and {source}: the "
                    "shards overlap; merge each shard's report once."
                )
            shard_owner[str(shard)] = source
            counts.setdefault(shard.count, f"{shard} ({source})")
            if len(counts) > 1:  # before any overlap: that is what different counts cause
                raise CheckFailed(
                    "The reports split the fleet in different numbers of shards: shard "
                    f"{' and shard '.join(counts.values())}; merge the reports of one run "
                    "(one N)."
                )
            if report.shards:
                shards.append(str(shard))
        for result in report.targets:
            if result.name in owner:
                raise SettingsError(
                    f"Target {result.name!r} is in both {owner[result.name]} and {source}: the "
                    "shards overlap (different targets files or shard counts?)."
                )
            owner[result.name] = source
            merged.append(result)
    if len(commands) > 1 or len(revisions) > 1:
        raise SettingsError(
            "The reports are of different runs (commands or revisions differ); merge the "
            "reports of one run."
        )
    if len(fleets) > 1:
        (first, _), (second, _) = list(fleets.values())[:2]
        raise SettingsError(
            f"{first} and {second} are reports of different targets files; merge the reports "
            "of one run."
        )
    missing_shards: tuple[str, ...] = ()
    if counts:
        (count,) = counts
        missing_shards = tuple(
            f"{index}/{count}" for index in range(count) if f"{index}/{count}" not in shard_owner
        )
    fleet = next(iter(fleets.values()), ("", ()))[1]
    return FleetReport(
        command=commands.pop() if commands else "upgrade",
        revision=revisions.pop() if revisions else None,
        targets=tuple(merged),
        seconds=seconds,
        shards=tuple(shards),
        interrupted=interrupted,
        fleet=fleet,
        missing_shards=missing_shards,
        missing_targets=tuple(name for name in fleet if name not in owner),
    )
