"""Replacing a database's contents with a backup's when the database has moved on since: what
the revisions applied after the backup made is dropped in the same transaction as the restore
(way back A of a release); anything else only the database has is refused."""

from __future__ import annotations

import tempfile
from pathlib import Path

from uaip_db import process
from uaip_db.backups.manifest import Manifest, top_level_objects
from uaip_db.catalog import expected
from uaip_db.catalog.snapshot import ObjectKey, take_from
from uaip_db.errors import BackupError, CheckFailed
from uaip_db.migrations import applied
from uaip_db.pg import connection, conninfo_dbname
from uaip_db.servers.binaries import client_program
from uaip_db.settings import DatabaseConfig
from uaip_db.text import first_few


def leftovers(manifest: Manifest, target: DatabaseConfig) -> list[str]:
    """The top-level objects only the target has, which `--clean` would leave behind. Those the
    revisions applied since the backup made (a release's new table, type, sequence: read from
    the committed snapshots) are returned, to be dropped first in the same transaction; any
    other (made by hand) is refused before anything is touched. A backup that does not list its
    objects (scripts/backup) cannot tell them apart."""
    if manifest.objects is None:
        raise CheckFailed(
            f"The {target.where()} is not empty, and the backup does not list its objects (made "
            "by scripts/backup), so a restore over it could leave some behind. Restore under a "
            "new name (--target NEW_NAME)."
        )
    with connection(target) as conn:
        current = take_from(conn)
        revisions = applied.current_revisions_on(conn)
    backup_objects = set(manifest.objects)
    backup_tables = {key[len("table ") :] for key in manifest.objects if key.startswith("table ")}
    found: list[str] = []
    for key in top_level_objects(current):
        owned_by = str(current.objects[key].get("owned_by", ""))
        if key in backup_objects or owned_by.split(".", 1)[0] in backup_tables:
            continue
        found.append(key)
    made = made_since(manifest.revisions, revisions)
    by_hand = [key for key in found if key not in made or key.split(" ", 1)[0] == "schema"]
    if by_hand:
        raise CheckFailed(
            f"The {target.where()} has objects the backup does not and no revision since it "
            f"made ({first_few(by_hand)}); a restore over them would leave them behind. Drop "
            "them first, or restore under a new name."
        )
    return found


def made_since(backup: tuple[str, ...], now: tuple[str, ...]) -> set[str]:
    """Top-level objects revision `now` has and the backup's revision had not (committed
    snapshots); none when either is not one known revision."""

    if len(backup) != 1 or len(now) != 1:
        return set()
    before, after = expected.committed(backup[0]), expected.committed(now[0])
    if before is None or after is None:
        return set()
    return set(top_level_objects(after)) - set(top_level_objects(before))


# How a top-level object is dropped, by its snapshot kind; its name is the snapshot's own
# (`schema.name` outside public, `name(argument types)` for routines).
DROP_KINDS = {
    "table": "TABLE",
    "view": "VIEW",
    "materialized view": "MATERIALIZED VIEW",
    "sequence": "SEQUENCE",
    "function": "FUNCTION",
    "procedure": "PROCEDURE",
    "aggregate": "AGGREGATE",
    "window function": "FUNCTION",
    "enum": "TYPE",
    "composite type": "TYPE",
    "range type": "TYPE",
    "domain": "DOMAIN",
    "extension": "EXTENSION",
    "schema": "SCHEMA",
    "event trigger": "EVENT TRIGGER",
}


def drop_statements(keys: list[str]) -> list[str]:
    """DROP ... IF EXISTS ... CASCADE for each object, tables and views first (what hangs off
    them goes with them); one the snapshot names in a way SQL cannot take is refused."""
    from psycopg import sql as psql  # noqa: PLC0415

    order = list(DROP_KINDS)
    statements = []
    for key in sorted(
        keys,
        key=lambda k: (
            order.index(ObjectKey.parse(k).kind) if ObjectKey.parse(k).kind in order else len(order)
        ),
    ):
        parsed = ObjectKey.parse(key)
        kind = DROP_KINDS.get(parsed.kind)
        if kind is None:
            raise CheckFailed(
                f"A restore over this database would leave {key} behind, which it cannot drop "
                "on its own; drop it first, or restore under a new name."
            )
        name, paren, arguments = parsed.name.partition("(")
        schema, dot, bare = name.partition(".")
        identifier = (
            psql.Identifier(schema, bare) if dot and kind != "SCHEMA" else (psql.Identifier(name))
        )
        text = (
            psql.SQL("DROP {} IF EXISTS {}{} CASCADE")
            .format(psql.SQL(kind), identifier, psql.SQL(paren + arguments))
            .as_string(None)
        )
        statements.append(text + ";")
    return statements


def replace_with_drops(
    folder: Path, manifest: Manifest, target: DatabaseConfig, drops: list[str]
) -> None:
    """Replace the target's contents with the backup's and drop what only the target has, in one
    transaction: pg_restore writes the restore as SQL (into a private temporary folder, removed
    after), and psql runs the drops and that SQL with --single-transaction, stopping at the
    first error, so a failure leaves the database as it was."""

    with tempfile.TemporaryDirectory(prefix="uaip-restore-") as work:
        script = Path(work) / "restore.sql"
        first = Path(work) / "drop-first.sql"
        first.write_text("\n".join(drops) + "\n", encoding="utf-8")
        process.run_tool(
            [
                client_program("pg_restore"),
                "--no-owner",
                "--clean",
                "--if-exists",
                f"--file={script}",
                str(folder / manifest.dump),
            ],
            [],
            what=f"read {folder.name}",
        )
        try:
            process.run_tool(
                [
                    client_program("psql"),
                    "--no-psqlrc",
                    "--quiet",
                    "--no-password",
                    "--set=ON_ERROR_STOP=1",
                    "--single-transaction",
                    f"--dbname={conninfo_dbname(target.name)}",
                    f"--file={first}",
                    f"--file={script}",
                ],
                [target],
                what=f"restore {folder.name} into {target.where()}",
            )
        except BackupError as error:
            raise BackupError(
                f"{error}\nThe database is as it was; fix the cause and restore again."
            ) from None
