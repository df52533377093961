"""The lifecycle steps that `inv db.*` tasks and Nox sessions compose: each says what it does."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from uaip_db import paths
from uaip_db.cli.confirm import confirm_destructive
from uaip_db.errors import CheckFailed, QuietExit, SettingsError, UaipDbError
from uaip_db.migrations import history, runner
from uaip_db.migrations.lock import DEFAULT_WAIT_SECONDS
from uaip_db.pg import connection
from uaip_db.settings import DatabaseConfig

if TYPE_CHECKING:
    from alembic.script import Script

Say = Callable[[str], None]
SVG = "schema.svg"


def say(line: str) -> None:
    print(line, flush=True)


@contextmanager
def timed(label: str, out: Say) -> Iterator[None]:
    started = time.perf_counter()
    yield
    out(f"{label} in {time.perf_counter() - started:.2f} s.")


def server_up(backend: str | None = None, out: Say = say) -> None:
    from uaip_db.servers.local import choose_backend

    config = DatabaseConfig.from_env()
    chosen = choose_backend(backend)
    out(chosen.up(config))
    if chosen.name == "docker":
        adopt_init_sql_database(config, out)


def adopt_init_sql_database(config: DatabaseConfig, out: Say = say) -> bool:
    """A container's first start runs init.sql, leaving v1.0.0 with no recorded revision.

    When the schema is exactly the baseline's, record the baseline so `inv db.upgrade` can go
    on from there; anything else is left for `inv db.stamp --rev auto` to explain.
    """
    from uaip_db.catalog import expected
    from uaip_db.catalog.snapshot import diff, take_from
    from uaip_db.migrations.baseline import BASELINE_REVISION

    with connection(config) as conn:
        if runner.current_revisions_on(conn):
            return False
        actual = take_from(conn)
    if not actual.objects or diff(expected.snapshot(BASELINE_REVISION), actual):
        return False
    runner.stamp(config, BASELINE_REVISION)
    out(
        f"The database was built from init.sql (schema v1.0.0, checked object by object); "
        f"recorded revision {BASELINE_REVISION}. `inv db.upgrade` brings it to head."
    )
    return True


def server_down(backend: str | None = None, out: Say = say) -> None:
    from uaip_db.servers.local import (
        DockerCompose,
        LocalCluster,
        docker_engine_answers,
        find_bindir,
    )

    if backend == "docker" or (backend is None and docker_engine_answers()):
        out(DockerCompose().down())
    elif backend in (None, "local") and find_bindir() is not None:
        out(LocalCluster().down())
    else:
        raise SettingsError(f"--backend {backend!r} is not known; use docker or local.")


def status(out: Say = say) -> None:
    from uaip_db.servers.local import (
        DockerCompose,
        LocalCluster,
        docker_engine_answers,
        find_bindir,
    )

    config = DatabaseConfig.from_env()
    out(f"settings: {config.display_url()} (DB_ENV={config.env})")
    if find_bindir() is not None:
        out(LocalCluster().status())
    if docker_engine_answers():
        out(DockerCompose().status())
    try:
        current = runner.current_revisions(config)
    except UaipDbError as error:
        out(f"database: not reachable: {error}")
        return
    out(f"database: reachable, at {describe_current(current)}")
    index = history.load()
    unknown = [revision for revision in current if index.get(revision) is None]
    if unknown:
        out(f"pending: unknown: {', '.join(unknown)} is not in these migration scripts")
        return
    pending = index.pending(current)
    out(
        f"pending: {len(pending)} revision(s)"
        + "".join(f"\n  {s.revision} {s.doc}" for s in pending)
    )


def describe_current(current: tuple[str, ...]) -> str:
    if not current:
        return "base (no migrations applied)"
    index = history.load()
    return ", ".join(
        index.describe(revision) + (" [head]" if revision in index.heads else "")
        for revision in current
    )


def upgrade(
    revision: str = "head",
    *,
    sql: bool = False,
    lock_wait: float = DEFAULT_WAIT_SECONDS,
    backup_first: bool = False,
    out: Say = say,
) -> None:
    config = DatabaseConfig.from_env()
    if revision == "base" or revision.startswith("-"):
        raise SettingsError(
            f"db.upgrade goes up; to go to {revision}, use `inv db.downgrade --rev {revision}`."
        )
    if sql:
        runner.upgrade(config, revision, sql=True)
        return
    # The common case, a database already at head, costs one query and no Alembic import.
    index = history.load()
    with connection(config) as conn:
        current = runner.current_revisions_on(conn)
    if revision in ("head", "heads") and current and sorted(current) == index.heads:
        out(f"{config.display_url()} is at head {describe_current(current)}; nothing to do.")
        return
    take_backup_first(config, backup_first, out)
    out(f"Upgrading {config.display_url()} to {revision}:")
    with timed("Upgrade finished", out):
        runner.upgrade(config, revision, lock_wait=lock_wait, report=out)
    out(f"Now at {describe_current(runner.current_revisions(config))}.")


def downgrade_plan(config: DatabaseConfig, target: str) -> list[Script]:
    """The scripts a downgrade to `target` reverts, newest first (linear history)."""
    scripts = runner.script_directory()
    current = runner.current_revisions(config)
    if not current:
        raise SettingsError("The database is at base already; there is nothing to downgrade.")
    if len(current) > 1:
        raise SettingsError(
            "The database has several heads applied; downgrade with an explicit --rev."
        )
    from alembic.util import CommandError

    chain: list[Script] = []
    try:
        script: Script | None = scripts.get_revision(current[0])
    except CommandError:
        raise history.unknown_revision(current[0]) from None
    while script is not None:
        chain.append(script)
        down = script.down_revision
        script = scripts.get_revision(down) if isinstance(down, str) else None
    if target == "base":
        return chain
    if target.startswith("-") and target[1:].isdigit():
        steps = int(target[1:])
        if steps > len(chain):
            raise SettingsError(
                f"Cannot go down {steps} revision(s): only {len(chain)} are applied. "
                "`inv db.current` shows where you are."
            )
        return chain[:steps]
    try:
        resolved = scripts.get_revision(target)
    except Exception:
        raise SettingsError(
            f"Unknown revision {target!r}. `inv db.history` lists the known revisions."
        ) from None
    ids = [s.revision for s in chain]
    if resolved is None or resolved.revision not in ids:
        raise SettingsError(
            f"{target} is not below the current revision {current[0]}; nothing to downgrade."
        )
    return chain[: ids.index(resolved.revision)]


def downgrade(
    revision: str = "-1",
    *,
    yes: bool = False,
    confirm_db: str | None = None,
    sql: bool = False,
    lock_wait: float = DEFAULT_WAIT_SECONDS,
    backup_first: bool = False,
    out: Say = say,
) -> None:
    config = DatabaseConfig.from_env()
    if sql:
        if ":" not in revision:
            raise SettingsError(
                "Offline SQL needs both ends of the downgrade: --rev FROM:TO "
                "(e.g. --rev b41d9e0c7f25:8f2b6c1d4e7a)."
            )
        runner.downgrade(config, revision, sql=True)
        return
    plan = downgrade_plan(config, revision)
    destructive = [s for s in plan if getattr(s.module, "destroys_data_on_downgrade", None)]
    out(f"Downgrading {config.display_url()} by {len(plan)} revision(s):")
    for script in plan:
        loss = getattr(script.module, "destroys_data_on_downgrade", None)
        out(f"  {script.revision} {script.doc}" + (f"  [drops {loss}]" if loss else ""))
    if destructive or revision == "base" or config.is_production:
        what = "drop data in" if destructive or revision == "base" else "downgrade"
        confirm_destructive(config, what, yes=yes, confirm_db=confirm_db)
    take_backup_first(config, backup_first, out)
    with runner.hold_lock(config, lock_wait, out):
        # Another runner may have moved the database while we asked; the plan must still hold.
        if [s.revision for s in downgrade_plan(config, revision)] != [s.revision for s in plan]:
            raise SettingsError(
                "The database changed while this downgrade waited (another runner migrated "
                "it); nothing was reverted. Check `inv db.current` and run it again."
            )
        with timed("Downgrade finished", out):
            runner.downgrade(config, revision, lock_wait=lock_wait, report=out, lock_held=True)
    out(f"Now at {describe_current(runner.current_revisions(config))}.")


def current(out: Say = say) -> None:
    config = DatabaseConfig.from_env()
    out(describe_current(runner.current_revisions(config)))


def show_history(verbose: bool = False) -> None:
    runner.show_history(verbose=verbose)


def new_revision(message: str, out: Say = say) -> None:
    script = runner.new_revision(message)
    out(f"Wrote {script.path}; fill in upgrade() and downgrade(), then `inv db.upgrade`.")


def stamp(
    revision: str,
    *,
    force: bool = False,
    yes: bool = False,
    confirm_db: str | None = None,
    lock_wait: float = DEFAULT_WAIT_SECONDS,
    out: Say = say,
) -> None:
    """Record a revision, after checking that the schema really is that revision's."""
    from uaip_db.catalog.snapshot import describe, diff, take
    from uaip_db.checks.verify import identify

    if not revision:
        raise SettingsError("Say which revision to record: inv db.stamp --rev REVISION (or auto).")
    config = DatabaseConfig.from_env()
    actual = take(config)
    if revision == "auto":
        match = identify(actual)
        if match.revision is None:
            raise CheckFailed(
                "The schema matches no revision; the closest is "
                f"{match.closest}:\n{describe(match.differences)}\n"
                "Fix the schema, or stamp a revision with --rev REV --force."
            )
        if match.revision == "base":
            raise CheckFailed("The database has no UAIP schema; run `inv db.upgrade` instead.")
        revision = match.revision
        out(f"The schema matches revision {history.load().describe(revision)}.")
    else:
        from alembic.util import CommandError

        from uaip_db.catalog import expected

        if revision != "base":
            try:
                resolved = runner.script_directory().get_revision(revision)
            except CommandError:
                resolved = None
            if resolved is None:
                raise SettingsError(f"Unknown revision {revision!r}; `inv db.history` lists them.")
            revision = resolved.revision
        differences = diff(expected.snapshot(revision), actual)
        if differences and not force:
            raise CheckFailed(
                f"The schema is not revision {revision}'s:\n{describe(differences)}\n"
                "Try --rev auto, fix the schema, or add --force if you are sure."
            )
        if differences:
            out(f"Stamping despite {len(differences)} difference(s), as --force asks.")
    if config.is_production:
        confirm_destructive(
            config, f"record revision {revision} in", yes=yes, confirm_db=confirm_db
        )
    runner.stamp(config, revision, lock_wait=lock_wait)
    out(
        f"Recorded {describe_current(runner.current_revisions(config))} "
        f"in {config.display_url()}; no schema objects were changed."
    )


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
    else:
        lines = [f"{result.database} does not match revision {result.revision}:"]
        if result.differences:
            lines.append(describe(result.differences))
        lines.extend(result.edited)
        print("\n".join(lines), file=sys.stderr, flush=True)
    if result.exit_code:
        raise QuietExit(result.exit_code)


def snapshots(*, check: bool = False, out: Say = say) -> None:
    """Rebuild the committed per-revision snapshots (or, with check, fail when they are stale)."""
    from uaip_db.catalog import expected
    from uaip_db.servers.scratch import scratch_server

    with scratch_server() as server:
        built = expected.build(server)
    if check:
        stale = expected.stale(built)
        if stale:
            raise CheckFailed(
                "Committed snapshots are stale: "
                + "; ".join(stale)
                + ". Run `inv db.snapshots` and commit migrations/snapshots/."
            )
        out(f"The {len(built)} committed snapshots match what the migrations build.")
        return
    changed = expected.write(built)
    out(
        f"Wrote {len(changed)} snapshot file(s) in {expected.snapshot_dir()}."
        if changed
        else "Snapshots were already up to date."
    )


def seed(out: Say = say) -> None:
    from uaip_db.migrations.baseline import BASELINE_REVISION
    from uaip_db.migrations.baseline import seed as load_init_sql

    config = DatabaseConfig.from_env()
    with timed(f"Loaded database/init.sql (schema v1.0.0) into {config.display_url()}", out):
        load_init_sql(config)
    out(f"Bring it to head with: inv db.stamp --rev {BASELINE_REVISION} db.upgrade")


def check(*, as_json: bool = False, out: Say = say) -> None:
    from uaip_db.checks.status import inspect

    status = inspect(DatabaseConfig.from_env())
    if as_json:
        out(status.to_json())
    elif status.exit_code == 0:
        out(status.summary())
    else:
        print(status.summary(), file=sys.stderr, flush=True)
    if status.exit_code:
        raise QuietExit(status.exit_code)


def roundtrip(out: Say = say) -> None:
    """Up, down and up again for every revision on a throwaway database."""
    from uaip_db.checks import roundtrip as stairway
    from uaip_db.servers.scratch import scratch_server

    out("Round trip of every revision (up, down, up) on a throwaway database:")
    with timed("Round trip passed", out), scratch_server() as server:
        stairway.run(server, report=out)


def lint(*, since: str | None = None, as_json: bool = False, out: Say = say) -> None:
    """Lint every revision (or those after `since`); exit 1 when anything is found."""
    import json

    from uaip_db.checks.lint import lint as lint_revisions

    findings, notes, docs = lint_revisions(since)
    if as_json:
        out(json.dumps([f.__dict__ for f in findings], indent=2))
    else:
        for note in notes:
            out(f"note: {note}")
        for finding in findings:
            print(finding.line(docs), file=sys.stderr, flush=True)
        if not findings:
            out("Every revision passes squawk and the repository's rules.")
    if findings:
        raise QuietExit(1)


def _backup_dir(out: str | None) -> Path:
    import os

    directory = Path(out).expanduser().resolve() if out else paths.backup_dir()
    if out and not directory.is_dir():
        raise SettingsError(
            f"Backup folder {directory} does not exist; create it or pick another --out."
        )
    if not out:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise SettingsError(f"Backup folder {directory} is not writable; pick another --out.")
    return directory


def backup(
    *,
    out_dir: str | None = None,
    jobs: int = 1,
    keep: int | None = None,
    verify_restore: bool = True,
    out: Say = say,
) -> Path:
    """pg_dump with a manifest; proven restorable on a throwaway database unless told not to."""
    from uaip_db.backups import dump
    from uaip_db.backups import manifest as manifests
    from uaip_db.backups import restore as restoring

    config = DatabaseConfig.from_env()
    directory = _backup_dir(out_dir)
    if jobs < 1:
        raise SettingsError("--jobs must be 1 or more.")
    if keep is not None and keep < 1:
        raise SettingsError("--keep must be 1 or more (how many backups of this database to keep).")
    with timed(f"Backed up {config.display_url()}", out):
        made = dump.create_backup(config, directory, jobs=jobs, compression=1 if jobs > 1 else None)
    manifest = made.manifest
    rows = sum(manifest.row_counts.values())
    out(
        f"  {made.path} ({manifest.format}, {len(manifest.row_counts)} tables, {rows} rows, "
        f"revision {manifest.revision_label}, fingerprint {manifest.fingerprint[:12]})"
    )
    if verify_restore:
        from uaip_db.servers.scratch import scratch_server

        with scratch_server() as server:
            report = restoring.verify_restorable(made, server, jobs=jobs)
        out(
            f"  proven restorable: restored and verified on a throwaway database in "
            f"{report.seconds:.2f} s"
        )
    if keep is not None:
        for removed in manifests.prune(directory, config.name, keep):
            out(f"  pruned {removed.name}")
    out(f"Restore it with: {made.restore_command()}")
    return made.path


def restore(
    path: str,
    *,
    target: str | None = None,
    yes: bool = False,
    confirm_db: str | None = None,
    jobs: int = 1,
    out: Say = say,
) -> None:
    """Restore a checked backup into a new database (default) or, with --yes, over one."""
    import datetime

    from uaip_db.backups import manifest as manifests
    from uaip_db.backups import restore as restoring

    if not path:
        raise SettingsError("Say which backup to restore: inv db.restore PATH.")
    manifest = manifests.check_files(path)
    config = DatabaseConfig.from_env()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d%H%M%S")
    name = target or f"{manifest.database}_restored_{stamp}"
    destination = config.with_database(name)
    into_existing = _database_has_tables(destination)
    if into_existing:
        confirm_destructive(destination, "replace the contents of", yes=yes, confirm_db=confirm_db)
    out(
        f"Files of {manifests.backup_folder(path).name} match the manifest; restoring into "
        f"{destination.display_url()}:"
    )
    report = restoring.restore_backup(path, destination, into_existing=into_existing, jobs=jobs)
    out(
        f"Restored {report.tables} tables, {report.rows} rows in {report.seconds:.2f} s; revision, "
        "fingerprint and row counts match the manifest."
    )


def _database_has_tables(database: DatabaseConfig) -> bool:
    from uaip_db.errors import ConnectionProblem

    try:
        with connection(database) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace "
                "AND relkind IN ('r', 'p')"
            ).fetchone()
    except ConnectionProblem as problem:
        if "does not exist" in str(problem):
            return False
        raise
    return bool(row and row[0])


def rehearse(path: str | None = None, *, out: Say = say) -> None:
    """Restore the newest (or named) backup into a throwaway database, upgrade, verify, check."""
    from uaip_db.backups import rehearse as rehearsal
    from uaip_db.servers.scratch import scratch_server

    config = DatabaseConfig.from_env()
    source = Path(path) if path else rehearsal.newest_backup(paths.backup_dir(), config.name)
    with scratch_server() as server:
        result = rehearsal.rehearse(source, server, report=out)
    for revision, held in result.locks.items():
        out(f"  locks held by {revision}: {', '.join(held) or 'none on tables'}")
    if not result.passed:
        raise CheckFailed("Rehearsal failed:\n" + "\n".join(f"  {p}" for p in result.problems))
    out(
        f"Rehearsal passed: upgrade took {result.upgrade_seconds:.2f} s; verify and check passed. "
        f"{config.display_url()} was not touched."
    )


def take_backup_first(config: DatabaseConfig, asked: bool, out: Say) -> None:
    """A verified backup before a change: always in production, elsewhere when asked."""
    if not (asked or config.is_production):
        return
    why = "DB_ENV=production" if config.is_production else "--backup"
    out(f"Taking a verified backup first ({why}):")
    try:
        backup(out=out)
    except UaipDbError as error:
        raise CheckFailed(
            f"The backup before the change failed, so nothing was changed: {error}"
        ) from None


def release_check(*, out: Say = say) -> None:
    """Write reports/release-<time>.md; exit 1 when any item failed."""
    from uaip_db.release import release_check as check_release

    config = DatabaseConfig.from_env()
    report, path = check_release(config, paths.backup_dir(), out)
    for number, item in enumerate(report.items, 1):
        out(f"  {number}. {item.title}: {item.status}")
    if not report.passed:
        raise CheckFailed(f"Release check failed; see {path}.")
    out(f"Release check passed; the report to sign is {path}.")


def docs(*, check: bool = False, out: Say = say) -> None:
    """Write docs/schema/ from the head schema built on a throwaway database (or check it)."""
    from uaip_db.catalog import expected
    from uaip_db.docs import schemadoc
    from uaip_db.servers.scratch import scratch_server

    if len(history.load().heads) != 1:
        raise CheckFailed(
            "The migration scripts have several heads; merge them first (`inv db.check`)."
        )
    with scratch_server() as server:
        built = expected.build(server)
    head = list(built)[-1]
    snapshot = built[head]
    files = schemadoc.render(snapshot, revision=head)
    directory = paths.project_root() / "docs" / "schema"
    undocumented = schemadoc.missing_comments(snapshot)
    if check:
        # The SVG depends on the local Graphviz version, so it is written but never compared.
        problems = [
            line for line in schemadoc.check(directory, files) if not line.startswith(SVG + ":")
        ]
        problems += [f"no comment: {item}" for item in undocumented]
        if problems:
            raise CheckFailed(
                "docs/schema/ is not what the migrations produce:\n"
                + "\n".join(problems)
                + "\nRun `inv db.docs` (and comment every table and column), then commit."
            )
        out(f"docs/schema/ matches the schema at {head}; every table and column has a comment.")
        return
    svg = schemadoc.render_svg(snapshot)
    if svg is not None:
        files[SVG] = svg
    changed = schemadoc.write(directory, files)
    for path in changed:
        out(f"  wrote {path.relative_to(paths.project_root())}")
    out(f"docs/schema/ describes revision {head}" + ("" if changed else " (unchanged)") + ".")
    for item in undocumented:
        out(f"  warning: no comment on {item}")


def schema_diff(start: str, end: str, *, out: Say = say) -> None:
    """The schema change between two revisions, in words and as a Mermaid diagram."""
    from uaip_db.catalog import expected
    from uaip_db.docs import schemadoc

    index = history.load()

    def resolve(name: str) -> str:
        if name in ("base", expected.BASE):
            return expected.BASE
        if name == "head":
            if len(index.heads) != 1:
                raise SettingsError("The scripts have several heads; name the revision.")
            return index.heads[0]
        matches = [r.revision for r in index.order if r.revision.startswith(name)]
        if len(matches) != 1:
            raise SettingsError(f"Unknown revision {name!r}; `inv db.history` lists them.")
        return matches[0]

    old_revision, new_revision = resolve(start), resolve(end)
    old, new = expected.snapshot(old_revision), expected.snapshot(new_revision)
    summary = schemadoc.change_summary(old, new)
    out(f"Schema change from {old_revision} to {new_revision}:")
    for line in summary or ["no change"]:
        out(f"  {line}")
    if summary:
        out("")
        out("```mermaid")
        out(schemadoc.change_diagram(old, new).rstrip())
        out("```")
