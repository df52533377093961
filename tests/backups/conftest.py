"""Backup fixtures: a database full of rows, a name to restore into, a folder for backups."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import sql
from uaip_db import pg
from uaip_db.catalog.snapshot import Snapshot
from uaip_db.checks import sample_data
from uaip_db.servers.scratch import ScratchServer, start_scratch_server
from uaip_db.settings import DatabaseConfig

SESSIONS = 2000
FILL_SQL = f"""
INSERT INTO sessions (user_id, project_name, current_stage, status, metadata, email)
SELECT 'user-' || i, 'Grüße 数据 ✓ project ' || i, 1 + i % 5,
       (ARRAY['in_progress', 'completed', 'abandoned'])[1 + i % 3],
       jsonb_build_object('n', i, 'label', 'Grüße 数据 ✓',
                          'nested', jsonb_build_object('tags', jsonb_build_array('ä', '数', i),
                                                       'deep', jsonb_build_object('ok', i % 2 = 0,
                                                                                  'none', NULL))),
       CASE WHEN i % 7 = 0 THEN NULL ELSE 'u' || i || '@example.org' END
FROM generate_series(1, {SESSIONS}) AS i;

INSERT INTO stage_data (session_id, stage_number, field_name, field_value)
SELECT s.session_id, st, 'field_' || st,
       jsonb_build_object('answer', 'Antwort ' || st || ' ✓', 'list', jsonb_build_array(st, 'x'))
FROM sessions AS s, generate_series(1, 2) AS st;

INSERT INTO conversation_history (session_id, stage_number, role, content, metadata)
SELECT s.session_id, 1 + k % 5, (ARRAY['user', 'assistant', 'system'])[1 + k % 3],
       'Nachricht ' || k || E' — 数据\\nzweite Zeile', jsonb_build_object('k', k)
FROM sessions AS s, generate_series(1, 3) AS k;

INSERT INTO checkpoints (session_id, stage_number, checkpoint_data)
SELECT session_id, current_stage, jsonb_build_object('state', metadata)
FROM sessions;

INSERT INTO project_charters (session_id, charter_data, governance_decision, feasibility_level)
SELECT session_id, jsonb_build_object('title', project_name, 'scope', jsonb_build_array('a', 'b')),
       (ARRAY['proceed', 'revise', 'halt', 'submit_to_committee'])[1 + current_stage % 4],
       (ARRAY['low', 'medium', 'high'])[1 + current_stage % 3]
FROM sessions WHERE status = 'completed' OR current_stage > 3;

INSERT INTO quality_metrics (session_id, stage_number, field_name, quality_score, issues)
SELECT s.session_id, q, 'field_' || q, (q * 3) % 11, jsonb_build_array('Problem ✗ ' || q)
FROM sessions AS s, generate_series(1, 2) AS q;

INSERT INTO consistency_reports (session_id, is_consistent, overall_feasibility, contradictions)
SELECT session_id, current_stage % 2 = 0, 'medium',
       jsonb_build_array(jsonb_build_object('between', jsonb_build_array(1, 2)))
FROM sessions;
"""


@pytest.fixture(scope="session")
def full_template(server: ScratchServer, head_template: str) -> str:
    """A database at head with thousands of rows in every table, cloned per test."""
    database = server.create_database("uaip_tpl_full", template=head_template)
    sql(database, FILL_SQL)
    sql(database, "ANALYZE")
    server.mark_template(database.name)
    return database.name


@pytest.fixture
def full_db(server: ScratchServer, full_template: str) -> Iterator[DatabaseConfig]:
    database = server.create_database(template=full_template)
    yield database
    server.drop_database(database.name)


@pytest.fixture
def new_target(server: ScratchServer) -> Iterator[DatabaseConfig]:
    """A database name on the server that does not exist yet (dropped after the test)."""
    name = f"uaip_restored_{os.urandom(4).hex()}"
    yield server.config_for(name)
    server.drop_database(name)


@pytest.fixture
def backups(tmp_path: Path) -> Path:
    return tmp_path / "backups"


def hashes(database: DatabaseConfig) -> dict[str, tuple[int, str]]:
    with psycopg.connect(**database.connect_kwargs(), autocommit=True) as conn:
        return sample_data.table_hashes(conn)


def exists(server: ScratchServer, name: str) -> bool:
    row = (
        server.connection()
        .execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
        .fetchone()
    )
    return row is not None and row[0] == 1


def cut_manifest(backup: Path) -> None:
    """Damage a backup the way a full disk or a killed copy does: its manifest.json cut short."""
    (backup / "manifest.json").write_text('{"format_version": 1, "datab')


def tamper(path: Path, how: Callable[[bytes], bytes]) -> None:
    path.write_bytes(how(path.read_bytes()))


def flip_one_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


def take_snapshot(folder: Path) -> Snapshot:
    return Snapshot.from_json((folder / "schema.json").read_text())


def rewrite_manifest(folder: Path, **changes: object) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.fixture
def other_owner(server: ScratchServer) -> Iterator[DatabaseConfig]:
    """Settings of a role that is no superuser and owns a database it is yet to create."""
    role, password = f"uaip_owner_{os.urandom(3).hex()}", "s3cret p@ss:'%"
    admin = server.connection()
    admin.execute(
        psycopg.sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
            psycopg.sql.Identifier(role), psycopg.sql.Literal(password)
        )
    )
    owner = DatabaseConfig(
        host=server.admin.host,
        port=server.admin.port,
        name=f"{role}_db",
        user=role,
        password=password,
    )
    try:
        yield owner
    finally:
        server.drop_database(owner.name)
        admin.execute(
            psycopg.sql.SQL("DROP ROLE IF EXISTS {}").format(psycopg.sql.Identifier(role))
        )


@pytest.fixture
def namesake(head_db: DatabaseConfig) -> Iterator[DatabaseConfig]:
    """An empty database of `head_db`'s name on a second private server: another database."""
    other = start_scratch_server()
    try:
        if other.cluster is None:
            pytest.skip("needs a second private server (UAIP_TEST_SERVER=env gives one server)")
        pg.create_database(other.connection(), head_db.name)
        yield other.config_for(head_db.name)
    finally:
        other.close()
