"""`inv db.backup`, `db.restore`, `db.rehearse` (db.backup is also the verified backup
`db.upgrade` and `db.downgrade` take first, through operations)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

# Task bodies import what only their own task needs (marked for ruff's PLC0415): at the top of cli/, these  # noqa: E501
# imports load the backups, release, fleet, docs and servers layers for every `inv` command,
# `inv --list` included (median of 15 runs on the shared 2 cores: 1.65 s against 0.89-1.12 s).
from uaip_db import parsers, paths, pg, settings
from uaip_db.cli.confirm import confirm_destructive
from uaip_db.cli.reporter import Say, say, timed
from uaip_db.errors import CheckFailed, UaipDbError, UsageError
from uaip_db.pg import MAINTENANCE_DATABASE
from uaip_db.settings import DatabaseConfig

if TYPE_CHECKING:
    from uaip_db.backups.workload import LoadSettings


def backup_folder_argument(out: str | None) -> Path:
    """The folder to write into: --out, else UAIP_BACKUP_DIR or backups/; created (0700) when
    missing, like the default."""
    directory = Path(out).expanduser().resolve() if out else paths.backup_dir()
    where = "--out" if out else "UAIP_BACKUP_DIR"
    if directory.exists() and not directory.is_dir():
        raise UsageError(
            f"Backup folder {directory} does not exist: that path is a file. Pick another {where}."
        )
    if not directory.is_dir():
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(directory, 0o700)
        except OSError as error:
            reason = error.strerror or str(error)
            raise UsageError(
                f"Backup folder {directory} does not exist and cannot be created ({reason}). "
                f"Pick another {where}."
            ) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"Backup folder {directory} is not writable; pick another {where}.")
    return directory


def whole_number(value: str | int, flag: str, meaning: str) -> int:
    """A flag that counts something, 1 or more (`--jobs 2`), or a usage error naming the flag."""
    return parsers.whole_number(1).flag(value, flag, meaning)


def backup(
    *,
    out_dir: str | None = None,
    jobs: str | int = 1,
    keep: str | int | None = None,
    verify_restore: bool = True,
    out: Say = say,
) -> Path:
    """pg_dump with a manifest; proven restorable on a throwaway database unless told not to;
    with --keep, older backups of the same database (same server, name and oid) are pruned."""
    from uaip_db.backups import dump, superuser  # noqa: PLC0415
    from uaip_db.backups import folder as folders  # noqa: PLC0415
    from uaip_db.backups import manifest as manifests  # noqa: PLC0415
    from uaip_db.backups import restore as restoring  # noqa: PLC0415
    from uaip_db.servers.scratch import scratch_server  # noqa: PLC0415

    workers = whole_number(jobs, "--jobs", "a number of parallel jobs")
    kept = None if keep in (None, "") else whole_number(keep, "--keep", "a number of backups")
    config = DatabaseConfig.from_env()
    directory = backup_folder_argument(out_dir)
    state = manifests.WRITTEN if verify_restore else manifests.NOT_VERIFIED
    with contextlib.ExitStack() as held:
        # Where the restore check will run is settled first: a server that cannot hold a
        # throwaway database is named before a backup is written that could not be verified.
        server = held.enter_context(scratch_server()) if verify_restore else None
        with timed(f"Backed up {config.display_url()}", out):
            made = held.enter_context(
                dump.new_backup(
                    config,
                    directory,
                    jobs=workers,
                    state=state,
                    report=out,
                )
            )
        manifest = made.manifest
        rows = sum(manifest.row_counts.values())
        out(
            f"  {made.path} ({manifest.format}, {len(manifest.row_counts)} tables, {rows} rows, "
            f"revision {manifest.revision_label}, fingerprint {manifest.fingerprint[:12]})"
        )
        if server is not None:
            try:
                report = restoring.verify_restorable(made, server, jobs=workers, report=out)
            except UaipDbError as error:
                # Kept, not removed: it may be the newest copy there is, and its manifest says
                # it was not proven restorable (`inv db.backups` shows that).
                recorded = manifests.read_manifest(made.path).state
                raise type(error)(
                    f"{error}\nThe backup {made.path} stays on disk, "
                    f"{manifests.describe_state(recorded)}."
                ) from None
            by = " by a superuser" if manifest.superuser_only else ""
            out(
                f"  proven restorable{by}: restored and verified on a throwaway database in "
                f"{report.seconds:.2f} s"
            )
        else:
            out(f"  {manifests.describe_state(manifests.NOT_VERIFIED)}")
        if note := superuser.note(manifest):
            out(f"  {note}")
        if kept is not None and not manifest.identity.known:
            out(
                f"  nothing pruned: {config.user} may not read the server's system identifier, "
                "so older backups cannot be told apart from another server's"
            )
        elif kept is not None:
            for removed in folders.prune(directory, made, kept):
                out(f"  pruned {removed.name}")
        out(f"Restore it with: {made.restore_command()}")
    return made.path


def restore(
    path: str,
    *,
    target: str | None = None,
    yes: bool = False,
    confirm_db: str | None = None,
    jobs: str | int = 1,
    out: Say = say,
) -> None:
    """Restore a checked backup into a new database (default) or, with --yes, into an existing
    one (in production --yes --confirm-db NAME); never into a system or template database."""
    from uaip_db.backups import folder as folders  # noqa: PLC0415
    from uaip_db.backups import manifest as manifests  # noqa: PLC0415
    from uaip_db.backups import restore as restoring  # noqa: PLC0415
    from uaip_db.backups import superuser  # noqa: PLC0415

    workers = whole_number(jobs, "--jobs", "a number of parallel jobs")
    if not path:
        raise UsageError("Say which backup to restore: inv db.restore PATH.")
    folder = manifests.backup_folder(path)
    # Held from the check to the end of the restore, which is handed the checked manifest
    # rather than hashing every file again.
    with folders.holding(folder):
        manifest = manifests.check_files(folder)
        config = DatabaseConfig.from_env()
        name = target or restoring.restored_name(config, manifest.database)
        destination = config.with_database(name)
        # Refused before any question is asked and anything is created.
        superuser.refuse_unless_superuser(
            config.with_database(MAINTENANCE_DATABASE), destination, folder, manifest
        )
        relations = restoring.existing_relations(
            config.with_database(MAINTENANCE_DATABASE), destination
        )
        if relations is not None:
            action = "replace the contents of" if relations else "restore a backup into"
            confirm_destructive(destination, action, yes=yes, confirm_db=confirm_db)
        out(
            f"Files of {folder.name} match the manifest; the backup is "
            f"{manifests.describe_state(manifest.state)}. Restoring into "
            f"{destination.display_url()}:"
        )
        report = restoring.restore_backup(
            folder,
            destination,
            into_existing=relations is not None,
            jobs=workers,
            report=out,
            checked=manifest,
        )
    matched = (
        "revision, fingerprint and row counts match the manifest."
        if report.schema_checked
        else "revision and row counts match the manifest (it records no schema: scripts/backup)."
    )
    out(f"Restored {report.tables} tables, {report.rows} rows in {report.seconds:.2f} s; {matched}")


def load_settings(
    load: bool, max_writer_wait: str | None, *, before_seconds: float | None = None
) -> LoadSettings | None:
    """The writers of a rehearsal under load, with the budget from --max-writer-wait, else
    UAIP_MAX_WRITER_WAIT (default 1 s); None without --load."""
    from uaip_db.backups.load import max_writer_wait as budget_setting  # noqa: PLC0415
    from uaip_db.backups.workload import LoadSettings  # noqa: PLC0415

    if not load:
        if max_writer_wait:
            raise UsageError("--max-writer-wait needs --load: it is the budget of the writers.")
        return None
    if max_writer_wait:
        budget = settings.MAX_WRITER_WAIT.parser.flag(max_writer_wait, "--max-writer-wait")
    else:
        budget = budget_setting()
    defaults = LoadSettings()
    return LoadSettings(
        clients=defaults.clients,
        rate=defaults.rate,
        before_seconds=defaults.before_seconds if before_seconds is None else before_seconds,
        max_writer_wait=budget,
    )


def rehearse(
    path: str | None = None,
    *,
    load: bool = False,
    max_writer_wait: str | None = None,
    as_json: bool = False,
    out: Say = say,
) -> None:
    """Restore the newest complete (or named) backup into a throwaway database, upgrade, verify,
    check; say whether the backup was verified. With --load, upgrade under writers and hold
    their waits to the budget."""

    from uaip_db.backups import manifest as manifests  # noqa: PLC0415
    from uaip_db.backups import rehearse as rehearsal  # noqa: PLC0415
    from uaip_db.servers.scratch import scratch_server  # noqa: PLC0415

    writers = load_settings(load, max_writer_wait)
    config = DatabaseConfig.from_env()
    progress = (lambda _line: None) if as_json else out
    if path:
        source = Path(path)
    else:
        identity = rehearsal.identity_of(config)
        if identity is None:
            progress(
                f"note: {config.where()} cannot be reached, so the newest backup named "
                f"{config.name} is taken, whichever server it came from."
            )
        source = rehearsal.newest_backup(paths.backup_dir(), config.name, identity)
    with scratch_server() as server:
        from uaip_db.operations import upgrade_copy  # noqa: PLC0415 (this task's own)

        result = rehearsal.rehearse(
            source, server, report=progress, load=writers, upgrade=upgrade_copy
        )
    if as_json:
        out(json.dumps(result.to_json(), indent=2))
    else:
        if result.load is not None:
            for line in result.load.summary():
                out(line)
        else:
            for revision, statements in result.locks.items():
                for line in rehearsal.lock_lines(revision, statements):
                    out(line)
    state = manifests.describe_state(result.backup_state)
    if not result.passed:
        raise CheckFailed(
            f"Rehearsal on {result.backup.name} failed (the backup is {state}):\n"
            + "\n".join(f"  {p}" for p in result.problems)
        )
    if not as_json:
        out(
            f"Rehearsal passed: upgrade took {result.upgrade_seconds:.2f} s; verify and check "
            + ("passed" if result.load is None else "passed; writers kept within the budget")
            + f". The backup used, {result.backup.name}, is {state}. "
            f"{config.display_url()} was not touched."
        )


def backup_folder_to_list(out: str | None) -> Path | None:
    """The folder to list: --out, else UAIP_BACKUP_DIR or backups/. A folder that was named and
    is none is a usage error (exit 2), rather than an empty listing that looks like a folder
    without backups; None when backups/ is not made yet (no backup was taken here)."""
    directory = Path(out).expanduser().resolve() if out else paths.backup_dir()
    where = "--out" if out else "UAIP_BACKUP_DIR"
    if directory.is_dir():
        return directory
    if not out and settings.BACKUP_DIR.read() is None and not directory.exists():
        return None
    if directory.exists():
        raise UsageError(
            f"Backup folder {directory} is a file, not a folder; check {where}: it names the "
            "folder db.backup writes into."
        )
    first = "inv db.backup" + (f" --out {shlex.quote(str(directory))}" if out else "")
    raise UsageError(
        f"Backup folder {directory} does not exist; check {where}, or make the first backup "
        f"there with `{first}`."
    )


def list_backups(*, out_dir: str | None = None, as_json: bool = False, out: Say = say) -> None:
    """The complete backups in the folder, newest first: database, revision, size, state; then
    the damaged ones it skipped (a manifest that cannot be read), by name and why. Exit 0 either
    way: a listing informs, and db.restore refuses a damaged backup when it is named."""

    from uaip_db.backups import folder as folders  # noqa: PLC0415
    from uaip_db.backups import superuser  # noqa: PLC0415

    directory = backup_folder_to_list(out_dir)
    if directory is None:
        if as_json:
            out(json.dumps({"backups": [], "damaged": []}, indent=2))
        else:
            out(f"No backups yet: `inv db.backup` writes them into {paths.backup_dir()}.")
        return
    found = folders.survey(directory)
    if as_json:
        rows = [
            {
                "path": str(path),
                "database": manifest.database,
                "created_at": manifest.created_at,
                "revision": manifest.revision_label,
                "bytes": manifest.total_bytes,
                "state": manifest.state,
                "superuser_only": (
                    None if manifest.superuser_only is None else list(manifest.superuser_only)
                ),
            }
            for path, manifest in found.backups
        ]
        damaged = [{"path": str(item.path), "problem": item.problem} for item in found.damaged]
        out(json.dumps({"backups": rows, "damaged": damaged}, indent=2))
        return
    if not found.backups:
        readable = " readable" if found.damaged else " complete"
        out(f"No{readable} backups in {directory}.")
    for path, manifest in found.backups:
        megabytes = manifest.total_bytes / 1e6
        note = superuser.note(manifest)
        out(
            f"{path}  {manifest.database} at {manifest.revision_label}, {manifest.created_at}, "
            f"{megabytes:.1f} MB, {manifest.state or 'state unknown (older uaip-db)'}"
            + (f"; {note}" if note else "")
        )
    if found.damaged:
        count = len(found.damaged)
        backups = "backup" if count == 1 else "backups"
        out(f"Skipped {count} damaged {backups}, which db.restore refuses:")
        for item in found.damaged:
            out(f"  {item.path}: {item.problem}.")


def clean(*, yes: bool = False, confirm_db: str | None = None, out: Say = say) -> None:
    """Drop leftover throwaway and restored databases, and remove dead scratch clusters."""
    from uaip_db.backups.restore import RESTORED_MARK, is_restored_name  # noqa: PLC0415
    from uaip_db.backups.throwaway import PREFIXES  # noqa: PLC0415
    from uaip_db.servers.scratch import stale_clusters, sweep_stale_clusters  # noqa: PLC0415

    config = DatabaseConfig.from_env()
    throwaway = [pg.like_pattern(prefix) for prefix in PREFIXES]
    with pg.admin_connection(config) as conn:
        found = pg.databases_like(conn, [*throwaway, pg.like_pattern(infix=RESTORED_MARK)])
    names = [
        name
        for name in found
        if name != config.name and (name.startswith(PREFIXES) or is_restored_name(name))
    ]
    clusters = stale_clusters()
    if not names and not clusters:
        out(f"Nothing to clean on {config.host}:{config.port} or in the scratch folders.")
        return
    for name in names:
        out(f"  database {name}")
    for root in clusters:
        out(f"  scratch cluster {root}")
    if names:
        confirm_destructive(
            config, f"drop {len(names)} database(s) next to", yes=yes, confirm_db=confirm_db
        )
        with pg.admin_connection(config) as conn:
            for name in names:
                pg.drop_database(conn, name)
    swept = sweep_stale_clusters()
    out(f"Dropped {len(names)} database(s), removed {len(swept)} scratch cluster folder(s).")
