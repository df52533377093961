"""`inv db.check`, `db.verify`, `db.snapshots`, `db.roundtrip`, `db.lint`: is the database, and
are the revisions, what they should be?"""

from __future__ import annotations

import json

from uaip_db.cli.reporter import Say, complain, finish, say, timed
from uaip_db.errors import CheckFailed
from uaip_db.settings import DatabaseConfig


def check(*, as_json: bool = False, out: Say = say) -> None:
    from uaip_db.checks.status import inspect

    status = inspect(DatabaseConfig.from_env())
    if as_json:
        out(status.to_json())
    elif status.exit_code == 0:
        out(status.summary())
    else:
        complain(status.summary())
    if status.exit_code:
        finish(status.exit_code)


def verify(*, as_json: bool = False, out: Say = say) -> None:
    from uaip_db.catalog.snapshot import describe
    from uaip_db.checks.verify import verify as verify_database

    result = verify_database(DatabaseConfig.from_env())
    if as_json:
        out(result.to_json())
    elif result.exit_code == 0:
        out(
            f"{result.database} matches revision {result.revision} (fingerprint "
            f"{result.actual_digest[:12]})."
        )
    elif result.stale:
        complain("\n".join([*result.edited, result.stale]))
    else:
        lines = [f"{result.database} does not match revision {result.revision}:"]
        if result.differences:
            lines.append(describe(result.differences))
        lines.extend(result.edited)
        complain("\n".join(lines))
    if result.exit_code:
        finish(result.exit_code)


def snapshots(*, check: bool = False, out: Say = say) -> None:
    """Rebuild the committed per-revision snapshots (or, with check, fail when they are stale)."""
    from uaip_db.catalog import expected
    from uaip_db.migrations import snapshots
    from uaip_db.servers.scratch import scratch_server

    with scratch_server() as server:
        built = snapshots.build(server)
    if check:
        stale = snapshots.stale(built)
        if stale:
            raise CheckFailed(
                "Committed snapshots are stale: "
                + "; ".join(stale)
                + ". Run `inv db.snapshots` and commit migrations/snapshots/."
            )
        out(f"The {len(built)} committed snapshots match what the migrations build.")
        return
    changed = snapshots.write(built)
    out(
        f"Wrote {len(changed)} snapshot file(s) in {expected.snapshot_dir()}."
        if changed
        else "Snapshots were already up to date."
    )


def roundtrip(out: Say = say) -> None:
    """Up, down and up again for every revision on a throwaway database."""
    from uaip_db.checks import roundtrip as stairway
    from uaip_db.servers.scratch import scratch_server

    out("Round trip of every revision (up, down, up) on a throwaway database:")
    with timed("Round trip passed", out), scratch_server() as server:
        stairway.run(server, report=out)


def lint(*, since: str | None = None, as_json: bool = False, out: Say = say) -> None:
    """Lint every revision (or those after `since`); exit 1 when anything is found."""
    from uaip_db.checks.lint import lint as lint_revisions

    findings, notes, docs = lint_revisions(since)
    if as_json:
        out(
            json.dumps(
                {
                    "passed": not findings,
                    "findings": [f.to_json() for f in findings],
                    "notes": notes,
                },
                indent=2,
            )
        )
    else:
        for note in notes:
            out(f"note: {note}")
        for finding in findings:
            complain(finding.text(docs))
        if not findings:
            out("Every revision passes squawk and the repository's rules.")
    if findings:
        finish(1)
