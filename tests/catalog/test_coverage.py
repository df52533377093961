"""What the fingerprint covers, refereed by pg_dump: a change that alters how the schema behaves
(and so the output of `pg_dump --schema-only --no-owner`) makes `inv db.verify` fail naming the
object; a change that leaves the behaviour as it was and a database nobody touched still verify.
(Restored copies: tests/backups/test_restore.py.)"""

from __future__ import annotations

import pytest

from tests.catalog.changes import (
    ALTERATIONS,
    CHANGES,
    ROLE,
    UNCHANGED,
    Change,
    apply_changes,
    schema_dump,
    with_role,
)
from tests.conftest import HEAD, run_inv, sql
from uaip_db.catalog import snapshot
from uaip_db.catalog.snapshot import KINDS, ObjectKey
from uaip_db.checks.verify import verify
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig

SHOWN = 20  # differences `inv db.verify` lists before "... and N more"


@pytest.fixture(scope="module")
def head_dump(server: ScratchServer, head_template: str) -> str:
    database = server.create_database(template=head_template)
    try:
        return schema_dump(database)
    finally:
        server.drop_database(database.name)


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_a_change_in_behaviour_fails_verify_naming_the_object(
    head_db: DatabaseConfig, reader: str, head_dump: str, change: Change
) -> None:
    sql(head_db, with_role(change.statement, reader))
    named = [with_role(line, reader) for line in change.named]

    # What `inv db.verify` prints and exits with (test_verify_names_each_difference_...).
    result = verify(head_db)

    assert (result.exit_code, result.revision) == (1, HEAD)
    assert result.differences == sorted(named)
    assert schema_dump(head_db) != head_dump, "pg_dump does not see it either"


def test_verify_names_each_difference_and_counts_those_it_leaves_out(
    head_db: DatabaseConfig, reader: str
) -> None:
    apply_changes(head_db, reader, portable_only=False)
    differences = verify(head_db).differences
    assert len(differences) > SHOWN

    result = run_inv("db.verify", database=head_db)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"does not match revision {HEAD}" in result.stderr
    for line in differences[:SHOWN]:
        assert line in result.stderr
    assert f"... and {len(differences) - SHOWN} more" in result.stderr


@pytest.mark.parametrize(("setup", "change", "named"), ALTERATIONS.values(), ids=ALTERATIONS.keys())
def test_a_change_to_an_object_of_another_kind_is_named(
    head_db: DatabaseConfig, reader: str, setup: str, change: str, named: list[str]
) -> None:
    if setup:
        sql(head_db, setup)
    before, dumped = snapshot.take(head_db), schema_dump(head_db)
    sql(head_db, with_role(change, reader))

    after = snapshot.take(head_db)

    assert snapshot.diff(before, after) == [with_role(line, reader) for line in named]
    assert schema_dump(head_db) != dumped, "pg_dump does not see it either"


@pytest.mark.parametrize("statements", UNCHANGED.values(), ids=UNCHANGED.keys())
def test_a_change_that_leaves_the_behaviour_as_it_was_still_verifies(
    head_db: DatabaseConfig, reader: str, head_dump: str, statements: str
) -> None:
    sql(head_db, with_role(statements, reader))

    result = verify(head_db)

    assert (result.exit_code, result.revision, result.differences) == (0, HEAD, [])
    assert schema_dump(head_db) == head_dump


def test_an_untouched_database_verifies_and_dumps_as_head_does(
    head_db: DatabaseConfig, head_dump: str
) -> None:
    result = run_inv("db.verify", database=head_db)

    assert result.returncode == 0, result.stderr
    assert f"matches revision {HEAD}" in result.stdout
    assert verify(head_db).differences == []
    assert schema_dump(head_db) == head_dump


def test_another_owner_keeps_the_fingerprint_of_what_was_granted(
    head_db: DatabaseConfig, reader: str
) -> None:
    sql(head_db, "GRANT SELECT ON consistency_reports TO PUBLIC")
    sql(head_db, "REVOKE EXECUTE ON FUNCTION mark_abandoned_sessions() FROM PUBLIC")
    before, dumped = snapshot.take(head_db), schema_dump(head_db)
    sql(
        head_db,
        with_role(
            f"ALTER TABLE consistency_reports OWNER TO {ROLE}; "
            f"ALTER FUNCTION mark_abandoned_sessions() OWNER TO {ROLE}",
            reader,
        ),
    )

    after = snapshot.take(head_db)

    assert snapshot.diff(before, after) == []
    assert after.objects["table consistency_reports"]["privileges"] == [
        "(owner): DELETE, INSERT, REFERENCES, SELECT, TRIGGER, TRUNCATE, UPDATE",
        "PUBLIC: SELECT",
    ]
    assert schema_dump(head_db) == dumped


def test_every_key_names_a_known_kind(head_db: DatabaseConfig, reader: str) -> None:
    apply_changes(head_db, reader, portable_only=False)
    sql(head_db, ALTERATIONS["range-type"][1])
    sql(head_db, ALTERATIONS["operator-collation-text-search"][1])
    sql(
        head_db,
        "CREATE TYPE answer AS (field text, value jsonb); CREATE SEQUENCE tickets; "
        "CREATE VIEW open_sessions AS SELECT session_id FROM sessions; "
        "CREATE MATERIALIZED VIEW stage_counts AS SELECT stage_number FROM stage_data",
    )

    keys = snapshot.take(head_db).object_keys()

    assert {key.kind for key in keys} <= set(KINDS)
    assert {
        "rule",
        "policy",
        "statistics",
        "domain",
        "composite type",
        "range type",
        "event trigger",
        "default privileges",
        "operator",
        "collation",
        "text search configuration",
    } <= {key.kind for key in keys}
    assert ObjectKey.parse("operator class int_ops USING btree") == ObjectKey(
        "operator class", "int_ops USING btree"
    )
    assert ObjectKey.parse("event trigger note_ddl") == ObjectKey("event trigger", "note_ddl")
