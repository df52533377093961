"""Invoke tasks for the UAIP Scoping database: `inv --list` shows them, `inv --help TASK` explains.

Each task is a thin wrapper over a function of uaip_db.cli; failures print one line and exit 2
(usage, settings, connection), 1 (a check found something) or 3 (pending migrations).
"""

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import task

from uaip_db.cli import backups as cli_backups
from uaip_db.cli import checks as cli_checks
from uaip_db.cli import fleet as cli_fleet
from uaip_db.cli import migrate as cli_migrate
from uaip_db.cli import release as cli_release
from uaip_db.cli import server as cli_server
from uaip_db.cli.reporter import (
    quiet_when_the_reader_leaves,
    reported,
    seconds,
    usage_errors_exit_2,
)

usage_errors_exit_2()
quiet_when_the_reader_leaves()

LOCK_WAIT = "Seconds to wait for another runner's migration lock (default 60)."
BACKEND = "docker or local; default: Docker when an engine answers, else local binaries."
CONFIRM_DB = "In production (DB_ENV=production): the database name, spelled out."
BACKUP_FIRST = "Take a verified backup first (always done when DB_ENV=production)."
JSON = "Print the result as JSON (for CI)."
MAX_WRITER_WAIT = (
    "Seconds a writer may wait behind the upgrade (default UAIP_MAX_WRITER_WAIT, else 1)."
)


@task(help={"backend": BACKEND})
def up(c: Context, backend: str = "") -> None:
    """Start the database server (docker compose or a local cluster in .pgdata/)."""
    with reported():
        cli_server.server_up(backend or None)


@task(help={"command": "Run this one SQL command instead of an interactive session."})
def psql(c: Context, command: str = "") -> None:
    """Open psql on the configured database (the password goes through the environment)."""
    with reported():
        cli_server.psql(command or None)


@task(help={"backend": BACKEND})
def down(c: Context, backend: str = "") -> None:
    """Stop the database server; its data stays for the next db.up."""
    with reported():
        cli_server.server_down(backend or None)


@task(help={"json": JSON})
def status(c: Context, json: bool = False) -> None:
    """Show the settings, the server, the current revision and pending migrations."""
    with reported(json_only=json, settings_first=False):  # it shows a bad one, marked
        cli_server.status(as_json=json)


@task(
    help={
        "rev": "Target revision (default head).",
        "sql": (
            "Print the SQL this database is missing (its revision to --rev) instead of "
            "running it; --rev FROM:TO renders any range."
        ),
        "backup": BACKUP_FIRST,
        "lock_wait": LOCK_WAIT,
    }
)
def upgrade(
    c: Context, rev: str = "head", sql: bool = False, backup: bool = False, lock_wait: str = "60"
) -> None:
    """Apply pending migrations up to --rev (default head)."""
    with reported():
        cli_migrate.upgrade(
            rev, sql=sql, lock_wait=seconds(lock_wait, "--lock-wait"), backup_first=backup
        )


@task(
    help={
        "rev": "Target: -N steps down (default -1), a revision id, or base.",
        "yes": "Go on without asking when the downgrade drops data.",
        "confirm_db": CONFIRM_DB,
        "sql": "Print the SQL instead of running it (offline mode; needs from:to revisions).",
        "backup": BACKUP_FIRST,
        "lock_wait": LOCK_WAIT,
    }
)
def downgrade(
    c: Context,
    rev: str = "-1",
    yes: bool = False,
    confirm_db: str = "",
    sql: bool = False,
    backup: bool = False,
    lock_wait: str = "60",
) -> None:
    """Revert migrations down to --rev (default one step); asks before dropping data."""
    with reported():
        cli_migrate.downgrade(
            rev,
            yes=yes,
            confirm_db=confirm_db or None,
            sql=sql,
            lock_wait=seconds(lock_wait, "--lock-wait"),
            backup_first=backup,
        )


@task(help={"json": JSON})
def current(c: Context, json: bool = False) -> None:
    """Show the revision the database is at."""
    with reported(json_only=json):
        cli_migrate.current(as_json=json)


@task(help={"json": JSON})
def releases(c: Context, json: bool = False) -> None:
    """List the application's releases and which of them may run on the database."""
    with reported(json_only=json):
        cli_migrate.releases(as_json=json)


@task(help={"verbose": "Show each revision's full details.", "json": JSON})
def history(c: Context, verbose: bool = False, json: bool = False) -> None:
    """List the migration scripts, newest first."""
    with reported(json_only=json):
        cli_migrate.show_history(verbose, as_json=json)


@task(help={"message": "What the new migration changes (required)."})
def revision(c: Context, message: str = "") -> None:
    """Write a new, empty migration script in migrations/versions/."""
    with reported():
        cli_migrate.new_revision(message)


@task(
    help={
        "rev": "The revision to record, or auto to find the one the schema matches.",
        "force": "Record it even though the schema differs from that revision's.",
        "yes": "In production: go on (needs --confirm-db too).",
        "confirm_db": CONFIRM_DB,
        "lock_wait": LOCK_WAIT,
    }
)
def stamp(
    c: Context,
    rev: str = "",
    force: bool = False,
    yes: bool = False,
    confirm_db: str = "",
    lock_wait: str = "60",
) -> None:
    """Record a revision without running migrations, once the schema is shown to match it."""
    with reported():
        cli_migrate.stamp(
            rev,
            force=force,
            yes=yes,
            confirm_db=confirm_db or None,
            lock_wait=seconds(lock_wait, "--lock-wait"),
        )


@task
def seed(c: Context) -> None:
    """Load database/init.sql (schema v1.0.0) into the configured, empty database."""
    with reported():
        cli_migrate.seed()


@task(help={"json": JSON})
def check(c: Context, json: bool = False) -> None:
    """Exit 0 at head, 3 with pending revisions, 1 when the scripts or the database are wrong."""
    with reported(json_only=json):
        cli_checks.check(as_json=json)


@task(help={"json": JSON})
def verify(c: Context, json: bool = False) -> None:
    """Compare the live schema with the one its recorded revision should have (exit 1 on drift)."""
    with reported(json_only=json):
        cli_checks.verify(as_json=json)


@task(help={"check": "Only check that the committed snapshots are current (exit 1 if stale)."})
def snapshots(c: Context, check: bool = False) -> None:
    """Rebuild migrations/snapshots/ (each revision's expected schema) on a throwaway database."""
    with reported():
        cli_checks.snapshots(check=check)


@task
def roundtrip(c: Context) -> None:
    """Upgrade, downgrade and upgrade every revision on a throwaway database, checking each step."""
    with reported():
        cli_checks.roundtrip()


@task(help={"since": "Lint only the revisions after this one.", "json": JSON})
def lint(c: Context, since: str = "", json: bool = False) -> None:
    """Check each revision's SQL with squawk and our rules (exceptions in migrations/)."""
    with reported(json_only=json):
        cli_checks.lint(since=since or None, as_json=json)


@task(
    help={
        "out": "Folder for the backup, created if missing (default: backups/ or UAIP_BACKUP_DIR).",
        "jobs": "Parallel pg_dump jobs; more than 1 writes the directory format.",
        "keep": "Keep only the newest N backups of this database (same server) in the folder.",
        "verify": "Prove the backup restorable on a throwaway database (default on).",
    }
)
def backup(c: Context, out: str = "", jobs: str = "1", keep: str = "", verify: bool = True) -> None:
    """Back up the database with a manifest (hashes, revision, row counts, fingerprint)."""
    with reported():
        cli_backups.backup(out_dir=out or None, jobs=jobs, keep=keep, verify_restore=verify)


@task(help={"out": "The folder to list (default: backups/ or UAIP_BACKUP_DIR).", "json": JSON})
def backups(c: Context, out: str = "", json: bool = False) -> None:
    """List the complete backups in the folder, newest first, and whether each was verified."""
    with reported(json_only=json):
        cli_backups.list_backups(out_dir=out or None, as_json=json)


@task(help={"yes": "Drop them without asking.", "confirm_db": CONFIRM_DB})
def clean(c: Context, yes: bool = False, confirm_db: str = "") -> None:
    """Drop leftover throwaway and restored databases; remove dead scratch clusters."""
    with reported():
        cli_backups.clean(yes=yes, confirm_db=confirm_db or None)


@task(
    positional=["path"],
    help={
        "path": "The backup folder (or its manifest.json).",
        "target": "Database to restore into (default: a new <db>_restored_<time> database).",
        "yes": "Restore into an existing target database, replacing its contents.",
        "confirm_db": CONFIRM_DB,
        "jobs": "Parallel pg_restore jobs (only into a new database).",
    },
)
def restore(
    c: Context,
    path: str | None = None,
    target: str = "",
    yes: bool = False,
    confirm_db: str = "",
    jobs: str = "1",
) -> None:
    """Restore a backup after checking its files; verify the result against its manifest."""
    with reported():
        cli_backups.restore(
            path or "", target=target or None, yes=yes, confirm_db=confirm_db or None, jobs=jobs
        )


@task(
    help={
        "backup": "The backup to rehearse on (default: the newest of this database).",
        "load": "Upgrade under pgbench writers and measure what each statement makes them wait.",
        "max_writer_wait": MAX_WRITER_WAIT,
        "json": JSON,
    }
)
def rehearse(
    c: Context, backup: str = "", load: bool = False, max_writer_wait: str = "", json: bool = False
) -> None:
    """Restore a backup into a throwaway database, upgrade it to head, verify and check it."""
    with reported(json_only=json):
        cli_backups.rehearse(
            backup or None, load=load, max_writer_wait=max_writer_wait or None, as_json=json
        )


@task(help={"check": "Only check that docs/schema/ is current and complete (exit 1 if not)."})
def docs(c: Context, check: bool = False) -> None:
    """Write docs/schema/ (tables, functions, Mermaid ER diagram) from the migrations' head."""
    with reported():
        cli_release.docs(check=check)


@task(
    name="diff",
    help={
        "from_": "Revision to start from (id, base or head; default base).",
        "to": "Revision to end at (default head).",
    },
)
def schema_diff(c: Context, from_: str = "base", to: str = "head") -> None:
    """Show the schema change between two revisions, in words and as a Mermaid diagram."""
    with reported():
        cli_release.schema_diff(from_, to)


db = Collection(
    "db",
    up,
    down,
    psql,
    status,
    upgrade,
    downgrade,
    current,
    history,
    releases,
    revision,
    stamp,
    seed,
    check,
    verify,
    snapshots,
    roundtrip,
    lint,
    backup,
    backups,
    clean,
    restore,
    rehearse,
    docs,
    schema_diff,
)


@task(
    name="check",
    help={
        "load": "Rehearse under pgbench writers (default; --no-load skips the writers).",
        "max_writer_wait": MAX_WRITER_WAIT,
    },
)
def release_check(c: Context, load: bool = True, max_writer_wait: str = "") -> None:
    """Back up, lint, render the SQL, rehearse on a restored copy, and write the release report."""
    with reported():
        cli_release.release_check(load=load, max_writer_wait=max_writer_wait or None)


release = Collection("release", release_check)

TARGETS = "The targets file (TOML: [defaults] and one [[targets]] per database; docs/FLEET.md)."
SHARD = "Take shard I of N (I from 0 to N-1): a stable share of the targets, e.g. 0/4."
PARALLEL = "Targets worked on at once (default: the number of cores)."


@task(
    name="upgrade",
    help={
        "targets": TARGETS,
        "rev": "Target revision (default head).",
        "parallel": PARALLEL,
        "canary": "Upgrade the first N targets (file order) first; if one fails, stop there.",
        "shard": SHARD,
        "backup": "Take a verified backup of each target first (always when DB_ENV=production).",
        "lock_wait": LOCK_WAIT,
        "json": JSON,
    },
)
def fleet_upgrade(
    c: Context,
    targets: str = "",
    rev: str = "head",
    parallel: str = "",
    canary: str = "0",
    shard: str = "",
    backup: bool = False,
    lock_wait: str = "60",
    json: bool = False,
) -> None:
    """Upgrade every target of a targets file; exit 1 naming the ones that failed."""
    with reported(json_only=json):
        cli_fleet.upgrade(
            targets,
            revision=rev,
            parallel=parallel,
            canary=canary,
            shard=shard,
            backup=backup,
            lock_wait=seconds(lock_wait, "--lock-wait"),
            as_json=json,
        )


@task(name="check", help={"targets": TARGETS, "shard": SHARD, "parallel": PARALLEL, "json": JSON})
def fleet_check(
    c: Context, targets: str = "", shard: str = "", parallel: str = "", json: bool = False
) -> None:
    """db.check on every target: exit 3 when any has pending revisions, 1 when any is wrong."""
    with reported(json_only=json):
        cli_fleet.check(targets, shard=shard, parallel=parallel, as_json=json)


@task(name="verify", help={"targets": TARGETS, "shard": SHARD, "parallel": PARALLEL, "json": JSON})
def fleet_verify(
    c: Context, targets: str = "", shard: str = "", parallel: str = "", json: bool = False
) -> None:
    """Compare every target with its revision's committed snapshot; exit 1 naming drifted ones."""
    with reported(json_only=json):
        cli_fleet.verify(targets, shard=shard, parallel=parallel, as_json=json)


@task(name="status", help={"targets": TARGETS, "shard": SHARD, "parallel": PARALLEL, "json": JSON})
def fleet_status(
    c: Context, targets: str = "", shard: str = "", parallel: str = "", json: bool = False
) -> None:
    """Show each target's revision and what is pending."""
    with reported(json_only=json):
        cli_fleet.status(targets, shard=shard, parallel=parallel, as_json=json)


@task(
    name="report",
    positional=["reports"],
    help={
        "reports": "Shard reports (fleet.upgrade --json): a folder of them, a glob, or a,b,c.",
        "json": JSON,
    },
)
def fleet_report(c: Context, reports: str | None = None, json: bool = False) -> None:
    """Merge the JSON reports of a run's shards into one table (exit 1 if any target failed)."""
    with reported(json_only=json):
        cli_fleet.report(reports or "", as_json=json)


fleet = Collection("fleet", fleet_upgrade, fleet_check, fleet_verify, fleet_status, fleet_report)
ns = Collection(db, release, fleet)
