"""Two releases live at once, proven on the rehearsal copy: after each revision the release
applies, the application that runs now (the previous release) starts with its own copy of the
scripts, and the application's statements (workload/) run.

During a deploy the previous release keeps serving while the expand revisions run, and may
restart meanwhile; only after every instance runs the new release do the contract revisions
run. So an expand revision that breaks the previous release, or a contract revision whose
objects the application's statements still use, fails the release, naming both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from uaip_db.backups import workload
from uaip_db.catalog import expected
from uaip_db.checks.status import check_migrations
from uaip_db.errors import UaipDbError
from uaip_db.migrations import history, phases, releases
from uaip_db.release.report import FAIL, PASS, Item
from uaip_db.settings import DatabaseConfig

TITLE = "Previous release"


@dataclass(frozen=True)
class Stop:
    """The copy after one revision: what the previous release's start-up check said (None: it
    accepted) and which of the application's statements failed."""

    revision: str
    phase: str
    contracted: bool  # a contract revision ran at or before this one
    refused: str | None
    broken: list[workload.Breakage]


@dataclass
class PreviousRelease:
    """Plays the release running now on the rehearsal copy, after each revision applied."""

    name: str  # "1.2.0 (at d7c3a9e5f1b2)"
    revision: str
    index: history.ScriptIndex
    stops: list[Stop] = field(default_factory=list)
    unavailable: str | None = None  # why the statements could not be run at all
    # What fails on the copy before any revision: workload/ is not what runs on it now.
    failing_already: list[workload.Breakage] = field(default_factory=list)

    def before(self, copy: DatabaseConfig) -> None:
        self.failing_already = self._probe(copy)

    def _probe(self, copy: DatabaseConfig) -> list[workload.Breakage]:
        """The application's statements that fail on `copy`; none once they cannot be run."""
        if self.unavailable is not None:
            return []
        try:
            return workload.probe(copy)
        except UaipDbError as error:
            self.unavailable = str(error)
            return []

    def after_each(self, copy: DatabaseConfig, revision: str) -> None:
        phase = _phase(self.index, revision)
        contracted = phase != phases.EXPAND or any(s.contracted for s in self.stops)
        try:
            check_migrations(copy, scripts=self.index.as_of(self.revision))
            refused = None
        except UaipDbError as error:
            refused = " ".join(str(error).split())
        self.stops.append(Stop(revision, phase, contracted, refused, self._probe(copy)))

    def problems(self) -> list[str]:
        """What fails the release: the first revision that breaks each statement, and an expand
        revision the previous release cannot start on."""
        found = [
            f"workload/ is not what the application running now runs: before any revision, its "
            f"statement {broke.line()}; workload/ holds the statements of the release running on "
            "the database (update it when the next one is deployed everywhere)"
            for broke in self.failing_already
        ]
        seen = {broke.script + broke.statement for broke in self.failing_already}
        for stop in self.stops:
            if stop.refused is not None and not stop.contracted:
                found.append(
                    f"Expand revision `{stop.revision}`: the previous release ({self.name}) "
                    f"refuses to start on it: {stop.refused}"
                )
            for broke in stop.broken:
                if broke.script + broke.statement in seen:
                    continue
                seen.add(broke.script + broke.statement)
                found.append(breakage_sentence(stop, broke))
        return found

    def item(self) -> Item:
        body = [
            f"The application running now, release {self.name}, played on the rehearsed copy "
            "after each revision: its start-up check with its own copy of the migration "
            "scripts, and its statements (workload/, one transaction of each script).",
            "",
        ]
        if not self.unavailable:
            body.append(
                "- before the release: "
                + (
                    f"{len(self.failing_already)} statement(s) fail"
                    if self.failing_already
                    else "its statements run"
                )
            )
        for stop in self.stops:
            started = (
                "start-up check accepts"
                if stop.refused is None
                else "start-up check refuses"
                + (" (as it must after a contract revision)" if stop.contracted else "")
            )
            ran = (
                "statements not run"
                if self.unavailable
                else (
                    f"{len(stop.broken)} statement(s) fail" if stop.broken else "its statements run"
                )
            )
            body.append(f"- after `{stop.revision}` ({stop.phase}): {started}; {ran}")
        problems = self.problems()
        if self.unavailable:
            problems.append(f"The application's statements could not be run: {self.unavailable}")
        body += ["", *(f"- **{p}**" for p in problems)] if problems else []
        if problems:
            return Item(TITLE, FAIL, body, "previous_release", problems[0][:120])
        body += [
            "",
            f"Release {self.name} keeps working while the expand revisions run; "
            + (
                "the contract revisions wait until every instance runs the new release."
                if any(s.contracted for s in self.stops)
                else "every revision of this release is expand."
            ),
        ]
        return Item(TITLE, PASS, body, "previous_release", f"release {self.name} keeps working")


def breakage_sentence(stop: Stop, broke: workload.Breakage) -> str:
    if stop.contracted:
        return (
            f"Contract revision `{stop.revision}`: the application's statement {broke.line()}; "
            "the running application would break here: deploy the application that stops "
            "using it (and update workload/) before this revision."
        )
    return (
        f"Expand revision `{stop.revision}` breaks the running application: its statement "
        f"{broke.line()}; an expand revision must keep the previous release working: mark it "
        'phase = "contract" and deploy the application first, or change it.'
    )


def previous_release(index: history.ScriptIndex, current: str) -> PreviousRelease | None:
    """The release that runs on the database now: the newest in migrations/releases.toml that
    may run at `current`, else the application whose scripts end at `current`; None on an
    empty database (no application runs on it yet)."""
    if current == expected.BASE or index.get(current) is None:
        return None
    fitting = [r for r in releases.load() if releases.fit(r, current, index).runs]
    if fitting:
        newest = fitting[-1]
        return PreviousRelease(f"{newest.version} (at {newest.revision})", newest.revision, index)
    return PreviousRelease(f"at `{current}` (not in releases.toml)", current, index)


def no_previous_release(current: str) -> Item:
    return Item(
        TITLE,
        PASS,
        [f"No application runs on the database now (it is at `{current}`): nothing to keep."],
        "previous_release",
        "none runs on the database yet",
    )


def who_runs(index: history.ScriptIndex, current: str, pending: list[str]) -> list[str]:
    """Which application releases (migrations/releases.toml) may run before this release, during
    it (after its expand revisions, before its first contract one) and after it."""
    if not pending:
        return []
    known = releases.load()
    first_contract = next(
        (n for n, r in enumerate(pending) if _phase(index, r) != phases.EXPAND), len(pending)
    )

    def fitting(revision: str) -> str:
        names = [r.version for r in known if releases.fit(r, revision, index).runs]
        return ", ".join(names) or "none of the named releases"

    lines = [
        "Application releases that may run (migrations/releases.toml):",
        f"- before: {fitting(current) if current != expected.BASE else 'none (empty database)'}",
    ]
    if first_contract:
        window = pending[first_contract - 1]
        lines.append(
            f"- during (after the expand revisions, at `{window}`): {fitting(window)}, and the "
            "new release"
        )
    lines.append(f"- after (at `{pending[-1]}`): {fitting(pending[-1])}, and the new release")
    return lines


def _phase(index: history.ScriptIndex, revision: str) -> str:
    """As judged (migrations/releases.py); a revision the scripts lack counts as contract."""
    return releases.judged(index, revision) or phases.CONTRACT
