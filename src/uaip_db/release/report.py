"""The release report: a one-screen summary to sign, the items behind it, and its two twins.

`<stem>.md` is for people: first what is released, where, from which commit, each item's
verdict and what a person must still decide; then the run context, each item in full and the
sign-off. `<stem>.sql` is its appendix: the full upgrade SQL and the full rollback SQL, guards
included. `<stem>.json` carries the same items and verdicts for CI. The three are written
together under one stem that no earlier report used: a report never overwrites another.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uaip_db.errors import ReportNotWritten, UaipDbError
from uaip_db.files import fsync_folder
from uaip_db.release.context import RunContext
from uaip_db.release.source import SourceState
from uaip_db.text import inert_markdown, visible

PASS, FAIL = "PASS", "FAIL"
FORMAT_VERSION = 1
SUFFIXES = (".md", ".sql", ".json")
# In an item's text, replaced by the SQL appendix's file name (known only when it is written).
APPENDIX = "<appendix>"


@dataclass
class Item:
    title: str
    status: str
    body: list[str] = field(default_factory=list)
    key: str = ""  # its name in the JSON twin
    brief: str = ""  # why, in a few words, for the summary table
    # Measurements for CI, in the JSON twin only (the rehearsal's timings, locks and writers).
    data: dict[str, Any] | None = None

    def lines(self, names: ReportNames) -> list[str]:
        return [line.replace(APPENDIX, names.sql) for line in self.body]

    def to_dict(self, number: int, names: ReportNames) -> dict[str, Any]:
        return {
            "number": number,
            "key": self.key,
            "title": self.title,
            "status": self.status,
            "brief": self.brief,
            "details": self.lines(names),
            "data": self.data,
        }


@dataclass(frozen=True)
class ReportNames:
    """The file names of one report: `<stem>.md` and its twins beside it."""

    stem: str

    @property
    def markdown(self) -> str:
        return f"{self.stem}.md"

    @property
    def sql(self) -> str:
        return f"{self.stem}.sql"

    @property
    def json(self) -> str:
        return f"{self.stem}.json"


@dataclass
class ReleaseReport:
    database: str
    current: str
    head: str
    pending: list[str]
    items: list[Item] = field(default_factory=list)
    env: str = ""
    source: SourceState | None = None
    context: RunContext | None = None
    decisions: list[str] = field(default_factory=list)
    upgrade_sql: str = ""
    rollback_sql: str = ""

    @property
    def passed(self) -> bool:
        return all(item.status != FAIL for item in self.items)

    @property
    def verdict(self) -> str:
        return PASS if self.passed else FAIL

    def failed(self) -> list[str]:
        return [f"{n} {item.title}" for n, item in enumerate(self.items, 1) if item.status == FAIL]

    # --- the report for people ---------------------------------------------------------------

    def summary(self, written_at: str, names: ReportNames) -> list[str]:
        """The first screen: what, where, from which commit, each verdict, what is to decide."""
        failed = self.failed()
        outcome = (
            f"all {len(self.items)} items passed"
            if not failed
            else f"{len(failed)} of {len(self.items)} items failed: {', '.join(failed)}"
        )
        lines = [
            f"# Release check: {self.database}",
            "",
            f"Overall: **{self.verdict}** ({outcome}).",
            f"Written {written_at} by `inv release.check`. Full SQL: `{names.sql}`; "
            f"the same items for CI: `{names.json}`.",
            "",
            f"- **What**: {self._what()}",
            f"- **Where**: `{self.database}`, DB_ENV={self.env or 'unknown'}"
            + self._server_version(),
            f"- **Code**: {self.source.label() if self.source else 'unknown'}",
            f"- **Run by**: {self.context.run_by if self.context else 'unknown'}"
            + self._tool_versions(),
            "",
            "| # | item | result | in short |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {n} | {item.title} | {item.status} | {item.brief} |"
            for n, item in enumerate(self.items, 1)
        ]
        lines += ["", "**Still for a person to decide:**", ""]
        lines += [f"{n}. {text}" for n, text in enumerate(self.decisions, 1)] or ["Nothing."]
        return lines

    def markdown(self, written_at: str, names: ReportNames | None = None) -> str:
        names = names or ReportNames("release")
        lines = self.summary(written_at, names)
        if self.context is not None:
            lines += ["", "## Run context", "", *self.context.lines()]
        for number, item in enumerate(self.items, 1):
            lines += ["", f"## {number}. {item.title}: {item.status}", "", *item.lines(names)]
        lines += [
            "",
            "## Sign-off",
            "",
            f"- [ ] Release manager: the report is complete and every item passed "
            f"(overall: {self.verdict})",
            f"- [ ] Database owner: the backup ({self._item_ref('backup')}) and the rollback "
            f"plan ({self._item_ref('rollback')}) are acceptable, with the cost of each way back",
            "- [ ] Application owner: the application works with the new schema: its start-up "
            f"check on the rehearsed copy ({self._item_ref('application')})"
            + (
                f", the running release's statements after each revision "
                f"({self._item_ref('previous_release')})"
                if self.number_of("previous_release")
                else ""
            )
            + ", and what those cannot cover (its other queries and screens), which I have tried",
            "",
            "Name: ____________________  Date: ____________  Signature: ____________________",
            "",
        ]
        return "\n".join(inert(lines))

    def _what(self) -> str:
        if not self.pending:
            return f"nothing to apply: the database is at head `{self.head}`"
        return f"{len(self.pending)} revision(s), `{self.current}` -> `{self.head}` (head)"

    def _server_version(self) -> str:
        if self.context is None:
            return ""
        return f", PostgreSQL {self.context.versions.get('PostgreSQL server', 'unknown')}"

    def _tool_versions(self) -> str:
        if self.context is None:
            return ""
        versions = self.context.versions
        pg_dump = versions.get("pg_dump", "unknown").split(" ")[0]
        return (
            f", uaip-db {versions.get('uaip-db')}, Alembic {versions.get('Alembic')}, "
            f"pg_dump {pg_dump} (all versions: Run context)"
        )

    def number_of(self, key: str) -> int | None:
        for number, item in enumerate(self.items, 1):
            if item.key == key:
                return number
        return None

    def _item_ref(self, key: str) -> str:
        number = self.number_of(key)
        if number is None:
            return "not checked"
        return f"item {number}, {self.items[number - 1].status}"

    # --- the twins ---------------------------------------------------------------------------

    def to_json(self, written_at: str, names: ReportNames) -> str:
        data = {
            "format_version": FORMAT_VERSION,
            "written_at": written_at,
            "verdict": self.verdict,
            "passed": self.passed,
            "database": self.database,
            "env": self.env,
            "current": self.current,
            "head": self.head,
            "pending": self.pending,
            "source": self.source.to_dict() if self.source else None,
            "context": self.context.to_dict() if self.context else None,
            "items": [item.to_dict(n, names) for n, item in enumerate(self.items, 1)],
            "failed": self.failed(),
            "decisions": self.decisions,
            "files": {"report": names.markdown, "sql": names.sql, "json": names.json},
        }
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    def appendix(self, written_at: str, names: ReportNames) -> str:
        """The full SQL: the upgrade, then the rollback by downgrade with its guards."""
        rule = "-- " + "=" * 76
        return "\n".join(
            [
                f"-- Appendix of {names.markdown}: the full SQL of this release.",
                f"-- Database {self.database}, `{self.current}` -> `{self.head}`; "
                f"written {written_at}.",
                "-- It holds the upgrade AND the rollback: never run it as a whole. Releases run",
                "-- through `inv db.upgrade` / `inv db.downgrade`; this is their SQL as Alembic",
                "-- renders it offline (a guard's check is a DO block here, Python online).",
                "\\echo 'This file holds the upgrade and the rollback; run neither part with -f.'",
                "\\quit",
                "",
                rule,
                f"-- Part 1: the upgrade `{self.current}` -> `{self.head}` (`inv db.upgrade`)",
                rule,
                "",
                self.upgrade_sql.rstrip() or "-- Nothing to run: the database is at head.",
                "",
                rule,
                f"-- Part 2: the rollback by downgrade `{self.head}` -> `{self.current}` "
                f"(`inv db.downgrade --rev {self.current}`),",
                "-- with the guards that stop it at their revision, left applied, instead of "
                "losing data",
                rule,
                "",
                self.rollback_sql.rstrip() or "-- No downgrade: see the rollback plan.",
                "",
            ]
        )


FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")


def inert(lines: list[str]) -> list[str]:
    """The report's lines with what came from revisions, servers and files made harmless: no
    raw HTML and no remote image outside code fences (the report itself writes neither), and
    control characters visible everywhere. Fences are followed as a Markdown viewer follows
    them, so a fence closed early by the text inside it does not let the rest through."""
    shown, fence = [], ""
    for line in "\n".join(lines).split("\n"):  # an item's line may hold several
        marker = FENCE.match(line)
        if not fence:
            fence = marker.group(1) if marker else ""
            shown.append(visible(line) if marker else inert_markdown(line, keep_gt=True))
            continue
        closing = marker is not None and line.strip() == marker.group(1)
        if (
            closing
            and marker
            and marker.group(1)[0] == fence[0]
            and len(marker.group(1)) >= len(fence)
        ):
            fence = ""
        shown.append(visible(line))
    return shown


# The room a report and its twins are checked to have before the long work starts: more than
# any of this checklist's reports takes (the SQL appendix of a long chain is the largest part).
REPORT_ROOM = 1 << 20


def ensure_writable(directory: Path) -> None:
    """Fail now, in one line naming `directory`, when a report cannot be written there (a
    read-only checkout: OSError naming the file; a full disk: ReportNotWritten), rather than
    after a backup and a rehearsal. Writes (and removes) a probe the size of a large report."""
    import tempfile

    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".writable-") as probe:
        try:
            probe.write(b"\0" * REPORT_ROOM)
            probe.flush()
            os.fsync(probe.fileno())
        except OSError as error:
            raise not_written(directory, error, "before anything was done") from None


def not_written(directory: Path, error: OSError, when: str) -> ReportNotWritten:
    reason = error.strerror or str(error)
    return ReportNotWritten(
        f"Cannot write the release report into {directory} ({reason}); nothing was written "
        f"there, {when}. Free space there (or make it writable) and run release.check again."
    )


def write_report(directory: Path, stem: str, report: ReleaseReport, written_at: str) -> Path:
    """Write the report, its SQL appendix and its JSON twin; the report's path."""

    def render(names: ReportNames) -> dict[str, str]:
        return {
            ".md": report.markdown(written_at, names),
            ".sql": report.appendix(written_at, names),
            ".json": report.to_json(written_at, names),
        }

    return write_set(directory, stem, SUFFIXES, render)[".md"]


def write_new(directory: Path, stem: str, text: str) -> Path:
    """Write `stem.md` in `directory`, or `stem-2.md`, ...: a report never overwrites another."""
    return write_set(directory, stem, (".md",), lambda _names: {".md": text})[".md"]


def write_set(
    directory: Path,
    stem: str,
    suffixes: tuple[str, ...],
    render: Callable[[ReportNames], dict[str, str]],
) -> dict[str, Path]:
    """Claim `stem` (or `stem-2`, ...) for every suffix at once, creating each file exclusively,
    then write what `render` gives for the names claimed. Nothing existing is overwritten, and
    the set appears whole or not at all: each file is written (and fsynced) under a temporary
    name and linked into place only when all are complete; on a failure (a full disk) every
    file of the set is removed and ReportNotWritten names the folder."""
    directory.mkdir(parents=True, exist_ok=True)
    for number in range(1, 1000):
        names = ReportNames(stem if number == 1 else f"{stem}-{number}")
        if any((directory / f"{names.stem}{suffix}").exists() for suffix in suffixes):
            continue
        temporaries: list[Path] = []
        try:
            for suffix, text in render(names).items():
                temporary = directory / f".{names.stem}{suffix}.{os.getpid()}.tmp"
                temporaries.append(temporary)
                _write_synced(temporary, text)
            claimed = _claim(directory, names.stem, suffixes, temporaries)
        except OSError as error:
            raise not_written(directory, error, "the checks' results are above") from None
        finally:
            for temporary in temporaries:
                temporary.unlink(missing_ok=True)
        if claimed is None:
            continue
        return claimed
    raise UaipDbError(f"Too many reports named {stem}*.md in {directory}; move some away.")


def _write_synced(path: Path, text: str) -> None:
    with path.open("x", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _claim(
    directory: Path, stem: str, suffixes: tuple[str, ...], written: list[Path]
) -> dict[str, Path] | None:
    """Link each complete file in `written` to `stem + suffix` (a link never replaces a file);
    None, with nothing left, when a name is taken meanwhile."""
    claimed: dict[str, Path] = {}
    try:
        for suffix, source in zip(suffixes, written, strict=True):
            path = directory / f"{stem}{suffix}"
            os.link(source, path)
            claimed[suffix] = path
        fsync_folder(directory)
    except FileExistsError:
        for made in claimed.values():
            made.unlink()
        return None
    except BaseException:
        for made in claimed.values():
            made.unlink(missing_ok=True)
        raise
    return claimed
